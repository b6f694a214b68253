"""Flow posteriors: a diagonal Gaussian q0(z0|x) pushed through invertible steps z_t = f_t(z_{t-1}),
so that log q(z_T|x) = log q0(z0|x) - sum_t log |det dz_t/dz_{t-1}| (Rezende & Mohamed 2015,
eq. 7).

- "iaf": inverse autoregressive flow (Kingma et al. 2016, sec. 4), each step a MADE (Germain et
  al. 2015) over z that also reads a context h of the encoder's.
- "planar": planar flows (Rezende & Mohamed 2015, eq. 10-12), amortised: the encoder outputs
  every step's u, w and b.

The encoder outputs 2D + `flow_context_features(config)` values: mu, logvar, then the context.
The density of a flow posterior is known at its own draws only (`rsample_with_log_prob`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.config import ModelConfig
from vaelab.models.distributions import DiagonalGaussian, at_least_float32

MIN_IAF_WIDTH = 128  # an IAF step's MADE hidden width (and h's size): max(128, 2 D)
# Kingma et al. 2016, sec. 4: s starts "sufficiently positive, such as close to +1 or +2", so
# that sigma = sigmoid(s + 2) ~ 0.88 and each step starts close to the identity.
FORGET_BIAS = 2.0


class Flow(nn.Module):
    """Invertible steps z0 -> z_T, with the parameters or context of each example in `context`."""

    @staticmethod
    def context_size(latent_dim: int, steps: int) -> int:
        """How many values per example the encoder outputs for the flow, beside mu and logvar."""
        raise NotImplementedError

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """z_T and sum_t log |det dz_t/dz_{t-1}|: z (..., B, D), context (B, C) -> (..., B, D),
        (..., B)."""
        raise NotImplementedError


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out, in) (MADE, eq. 10)."""

    def __init__(self, mask: Tensor) -> None:
        super().__init__(mask.shape[1], mask.shape[0])
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class IAFStep(nn.Module):
    """One IAF step (Kingma et al. 2016, eq. 10-14, the "LSTM-type" update): [m, s] = MADE(z, h),
    sigma = sigmoid(s + FORGET_BIAS), z' = sigma * z + (1 - sigma) * m; log det = sum log sigma.

    The MADE has one ELU hidden layer of the context's width, to which h is added (as in the
    paper's code). `order[i]` is z_i's place in the step's autoregressive order: m_i and s_i
    read only the z_j before it, so dz'_i/dz_j = 0 for j after i.
    """

    def __init__(self, order: Tensor, width: int) -> None:
        super().__init__()
        latent_dim = len(order)
        degree_in = order + 1  # 1..D
        degree_hidden = torch.arange(width) % latent_dim  # 0..D-1; 0: reads the context only
        self.z_to_hidden = MaskedLinear(degree_hidden[:, None] >= degree_in[None, :])  # (W, D)
        to_output = degree_in[:, None] > degree_hidden[None, :]  # (D, W)
        self.hidden_to_output = MaskedLinear(torch.cat([to_output, to_output]))  # m and s

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        hidden = F.elu(self.z_to_hidden(z) + context)  # (..., B, W)
        m, s = self.hidden_to_output(hidden).chunk(2, dim=-1)  # (..., B, D) each
        z, m, s = at_least_float32(z, m, s)  # bfloat16 network outputs under autocast
        gate = s + FORGET_BIAS
        sigma = torch.sigmoid(gate)
        return sigma * z + (1.0 - sigma) * m, F.logsigmoid(gate).sum(dim=-1)


class InverseAutoregressiveFlow(Flow):
    """`steps` IAF steps, the variable order reversed from one step to the next (Kingma et al.
    2016, sec. 4). The context h has max(128, 2 D) features, the MADEs' hidden width."""

    def __init__(self, latent_dim: int, steps: int) -> None:
        super().__init__()
        width = self.context_size(latent_dim, steps)
        order = torch.arange(latent_dim)
        self.steps = nn.ModuleList(
            IAFStep(order if t % 2 == 0 else order.flip(0), width) for t in range(steps)
        )

    @staticmethod
    def context_size(latent_dim: int, steps: int) -> int:
        return max(MIN_IAF_WIDTH, 2 * latent_dim)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        log_det = torch.zeros(z.shape[:-1], device=z.device, dtype=context.dtype)
        for step in self.steps:
            z, step_log_det = step(z, context)
            log_det = log_det + step_log_det
        return z, log_det


def planar_step(z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """z' = z + u_hat tanh(w.z + b) (Rezende & Mohamed 2015, eq. 10) and log |det dz'/dz| =
    log |1 + u_hat.psi(z)|, psi = tanh'(w.z + b) w (eq. 11-12). z (..., B, D); u, w (B, D);
    b (B, 1).

    u_hat = u + (m(w.u) - w.u) w / |w|^2, m(a) = -1 + softplus(a) (appendix A.1), so that
    w.u_hat = m(w.u) > -1 and the step is invertible: 1 + u_hat.psi = 1 + tanh' m(w.u) > 0.
    """
    wu = (w * u).sum(dim=-1, keepdim=True)  # (B, 1)
    w_u_hat = F.softplus(wu) - 1.0  # m(w.u), which is w.u_hat
    u_hat = u + (w_u_hat - wu) * w / w.pow(2).sum(dim=-1, keepdim=True).clamp_min(1e-8)
    activation = torch.tanh((z * w).sum(dim=-1, keepdim=True) + b)  # (..., B, 1)
    slope = 1.0 - activation.pow(2)  # tanh'
    return z + u_hat * activation, torch.log1p(slope * w_u_hat).squeeze(-1)


class PlanarFlow(Flow):
    """`steps` planar steps whose u, w (D each) and b of each example are the encoder's
    (Rezende & Mohamed 2015, sec. 4.1, the amortised setting): no parameters of its own. The
    steps are counted by the context, one (u, w, b) each; `steps` keeps the registry's
    signature."""

    def __init__(self, latent_dim: int, steps: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    @staticmethod
    def context_size(latent_dim: int, steps: int) -> int:
        return steps * (2 * latent_dim + 1)

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        d = self.latent_dim
        z, context = at_least_float32(z, context)
        log_det = torch.zeros(z.shape[:-1], device=z.device, dtype=z.dtype)
        for values in context.split(2 * d + 1, dim=-1):  # (B, 2 D + 1) per step
            u, w, b = values.split([d, d, 1], dim=-1)
            z, step_log_det = planar_step(z, u, w, b)
            log_det = log_det + step_log_det
        return z, log_det


FLOWS: dict[str, type[Flow]] = {"iaf": InverseAutoregressiveFlow, "planar": PlanarFlow}


def flow_context_features(config: ModelConfig) -> int:
    """The encoder outputs the configured flow needs beyond mu and logvar (0 without one)."""
    if config.flow == "none":
        return 0
    return FLOWS[config.flow].context_size(config.latent_dim, config.flow_steps)


def build_flow(config: ModelConfig) -> Flow | None:
    """The flow `config.flow` names, of `config.flow_steps` steps; None for "none"."""
    if config.flow == "none":
        return None
    return FLOWS[config.flow](config.latent_dim, config.flow_steps)


class FlowPosterior:
    """q(z_T|x): the base Gaussian q0(z0|x) through `flow`, with each example's `context`
    (B, C). Draws are (B, D), or (K, B, D) with `k` (the context broadcasts over K).

    Not a DiagonalGaussian: it has no closed-form KL, so the bounds estimate the KL by Monte
    Carlo at the draws. The context is kept in float32 or wider, as the base's parameters."""

    def __init__(self, base: DiagonalGaussian, flow: Flow, context: Tensor) -> None:
        self.base, self.flow = base, flow
        (self.context,) = at_least_float32(context)

    @property
    def mean(self) -> Tensor:
        """The flow applied to the base mean, f(mu): the code that figures, `embed` and the
        explorer show, and the one reconstructions decode. Not E_q[z] in general. (B, D)."""
        return self.flow(self.base.mean, self.context)[0]

    def mode(self) -> Tensor:
        """As `mean`: f(mu), not the mode of q(z|x) in general."""
        return self.mean

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: slice | Tensor) -> FlowPosterior:
        """The posteriors of some examples of the batch."""
        return FlowPosterior(self.base[index], self.flow, self.context[index])

    def rsample_with_log_prob(
        self, *, k: int | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """z_T and log q(z_T|x) = log q0(z0|x) - sum_t log |det dz_t/dz_{t-1}|: (B, D) and (B,),
        or (K, B, D) and (K, B). z0 is the base's `rsample`: the noise a Gaussian posterior
        would draw from the same generator."""
        z0 = self.base.rsample(k=k, generator=generator)
        z, log_det = self.flow(z0, self.context)
        return z, self.base.log_prob(z0) - log_det

    def rsample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draws z_T: (B, D), or (K, B, D) when `k` is given."""
        return self.rsample_with_log_prob(k=k, generator=generator)[0]

    def sample(self, *, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """As `rsample`, without gradients."""
        with torch.no_grad():
            return self.rsample(k=k, generator=generator)

    def log_prob(self, z: Tensor) -> Tensor:
        """Refused: inverting the flow at an arbitrary z has no closed form."""
        raise VaelabError(
            "a flow posterior's density is known only at its own draws: use rsample_with_log_prob"
        )
