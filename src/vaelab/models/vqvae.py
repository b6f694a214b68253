"""The VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a conv encoder to an (h, w) grid of
D-dimensional vectors, each replaced by its nearest codebook entry, and a conv decoder.

In the shared model API a code z is the quantised grid flattened in (D, h, w) order, so
`latent_dim` is D h w: `encode(x).mean` is that vector, `decode(z)` unflattens it, and
interpolation and the explorer work on it as on any code. The posterior is a point mass on
the chosen entries, so the bound on log p(x) is the ELBO with no entropy term:
    log p(x) >= log p(x | z_q(x)) + log p(z_q(x)),
under the uniform prior of training (log p(z) = -h w log K) until `vaelab train-prior` fits a
gated PixelCNN (pixelcnn.py), which samples and scores the codes from then on.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.models.autoencoders import Autoencoder, LossTerms
from vaelab.models.bounds import ImportanceTerms
from vaelab.models.code_priors import CodePrior, UniformCodePrior
from vaelab.models.config import ModelConfig, code_grid
from vaelab.models.distributions import PointMass, Posterior
from vaelab.models.networks import ACTIVATION_LAYERS, conv_level_sizes
from vaelab.models.quantizer import Quantized, VectorQuantizer, perplexity, usage_share


class ResidualBlock(nn.Module):
    """x + conv1x1(act(conv3x3(act(x)))): the paper's residual block (section 4.2)."""

    def __init__(self, channels: int, activation: str) -> None:
        super().__init__()
        act = ACTIVATION_LAYERS[activation]
        self.net = nn.Sequential(
            act(),
            nn.Conv2d(channels, channels, 3, padding=1),
            act(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def _level_widths(config: ModelConfig) -> tuple[list[tuple[int, int]], list[int]]:
    """Spatial sizes per level and the channels at each: as the conv VAE's networks."""
    channels, height, width = config.data_shape
    sizes = conv_level_sizes(height, width, len(config.conv_channels))
    widths = [channels, *config.conv_channels[: max(len(sizes) - 1, 1)]]
    return sizes, widths


class GridEncoder(nn.Module):
    """(B, C, H, W) -> (B, D, h, w): stride-2 4x4 convolutions, a residual block, a 1x1 conv."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        sizes, widths = _level_widths(config)
        act = ACTIVATION_LAYERS[config.activation]
        layers: list[nn.Module] = []
        if len(sizes) == 1:  # too small to downsample: a shape-keeping conv instead
            layers += [nn.Conv2d(widths[0], widths[1], 3, padding=1)]
        else:
            for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
                layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), act()]
        layers += [ResidualBlock(widths[-1], config.activation), act()]
        layers += [nn.Conv2d(widths[-1], config.code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class GridDecoder(nn.Module):
    """Flat codes (N, D h w) -> (N, C, H, W) parameters of p(x|z): the encoder mirrored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        sizes, widths = _level_widths(config)
        act = ACTIVATION_LAYERS[config.activation]
        self.grid_shape = (config.code_dim, *code_grid(config))
        layers: list[nn.Module] = [
            nn.Conv2d(config.code_dim, widths[-1], 3, padding=1),
            ResidualBlock(widths[-1], config.activation),
            act(),
        ]
        if len(sizes) == 1:
            layers += [nn.Conv2d(widths[1], widths[0], 3, padding=1)]
        for level in range(len(sizes) - 1, 0, -1):  # from the smallest size back up
            (h_small, w_small), (h_big, w_big) = sizes[level], sizes[level - 1]
            pad = (h_big - 2 * h_small, w_big - 2 * w_small)  # restores odd sizes (7 -> 3 -> 7)
            layers.append(
                nn.ConvTranspose2d(
                    widths[level], widths[level - 1], 4, stride=2, padding=1, output_padding=pad
                )
            )
            if level > 1:
                layers.append(act())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z.view(-1, *self.grid_shape))


def _is_prior_entry(key: str, prefix: str = "") -> bool:
    return key.startswith(f"{prefix}prior.")


def _drop_prior_entries(module: nn.Module, state: dict, prefix: str, metadata: object) -> None:
    for key in [k for k in state if _is_prior_entry(k, prefix)]:
        del state[key]


def _prior_entries_not_missing(module: nn.Module, incompatible: object) -> None:
    missing = incompatible.missing_keys  # type: ignore[attr-defined]
    missing[:] = [key for key in missing if ".prior." not in f".{key}"]


class VQVAE(Autoencoder):
    """Vector-quantised codes, a codebook learned by loss or EMA, and a prior over code grids."""

    has_prior = True
    title = "VQ-VAE"
    prior_fitted_after_training = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.code_dim, update=config.codebook_update
        )
        self.prior: CodePrior = UniformCodePrior(config.codebook_size, self.grid)  # type: ignore[assignment]
        # The fitted prior has its own files (RUN/prior/): the model's weights never hold it.
        self.register_state_dict_post_hook(_drop_prior_entries)
        self.register_load_state_dict_post_hook(_prior_entries_not_missing)

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        return GridEncoder(self.config), GridDecoder(self.config)

    @property
    def awaiting_prior(self) -> bool:
        return isinstance(self.prior, UniformCodePrior)

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w), the code grid's size."""
        return code_grid(self.config)

    def set_prior(self, prior: CodePrior) -> None:
        """Sample and score codes with `prior` (a fitted PixelCNN) from now on."""
        if prior.codebook_size != self.config.codebook_size or tuple(prior.grid) != self.grid:
            raise VaelabError(
                f"the prior models {prior.grid[0]}x{prior.grid[1]} grids of "
                f"{prior.codebook_size} codes, but this VQ-VAE has {self.grid[0]}x{self.grid[1]} "
                f"grids of {self.config.codebook_size}"
            )
        self.prior = prior.to(self.device)

    # --- codes ---------------------------------------------------------------------------------

    def quantize(
        self, x: Tensor, *, learn: bool = False, generator: torch.Generator | None = None
    ) -> Quantized:
        """Encode x (B, C, H, W) and quantise its grid; with `learn` (the training loss) this
        also updates the codebook's statistics (see VectorQuantizer)."""
        self.check_images(x)
        return self.quantizer(self.encoder(x), learn=learn, generator=generator)

    def code_indices(self, x: Tensor) -> Tensor:
        """The codebook numbers of x's grid: (B, h, w) int64."""
        return self.quantize(x).indices

    def indices_of(self, z: Tensor) -> Tensor:
        """The codebook numbers of flat codes z (..., D h w): (..., h, w). Exact for codes that
        `encode` or `draw_codes` gave; other points go to their nearest entries."""
        self.check_codes(z)
        dim, (height, width) = self.config.code_dim, self.grid
        grid = z.reshape(-1, dim, height * width).transpose(1, 2).reshape(-1, dim)
        return self.quantizer.nearest(grid.float()).view(*z.shape[:-1], height, width)

    def codes_of(self, indices: Tensor) -> Tensor:
        """Flat codes (B, D h w) of index grids (B, h, w), in the model's dtype."""
        return self.quantizer.lookup(indices).flatten(1).to(self.dtype)

    def encode(self, x: Tensor, y: Tensor | None = None) -> Posterior:
        """A point mass on the quantised grid, flattened: `.mean` is (B, D h w). With gradients
        on, the straight-through code (whose gradient reaches the encoder); without, the
        codebook's entries exactly."""
        quantized = self.quantize(x)
        if torch.is_grad_enabled():
            return PointMass(quantized.z_q.flatten(1))
        return PointMass(self.codes_of(quantized.indices))

    def draw_codes(
        self, n: int, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """n code grids from the prior (uniform, or the fitted PixelCNN), flattened; the
        randomness comes from `generator` (on any device), the codes are on the model's."""
        indices = self.prior.sample_indices(n, y=y, generator=generator, device=self.device)
        return self.codes_of(indices)

    # --- the objective and the bound -------------------------------------------------------

    def loss(
        self,
        x: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """recon + codebook loss + beta_c * commitment loss (the paper's eq. 3, each summed per
        example). `kl` is -log p(z_q) under the model's prior: in training the uniform one, so
        the paper's constant h w log K, and recon + kl is the bound. In training mode the
        codebook learns (see VectorQuantizer). `kl_scale` has no use here."""
        quantized = self.quantize(x, learn=self.training, generator=generator)
        x_params = self.decoder(quantized.z_q.flatten(1)).view(-1, *self.config.data_shape)
        recon = self.likelihood.nll(x_params, x).mean()
        vq = (quantized.codebook_loss + self.config.commitment * quantized.commitment_loss).mean()
        with torch.no_grad():
            kl = -self.prior.log_prob_indices(quantized.indices, y=y).mean().to(recon.dtype)
        return LossTerms(total=recon + vq, recon=recon, kl=kl)

    def importance_terms(
        self,
        x: Tensor,
        z: Tensor,
        posterior: Posterior,
        *,
        y: Tensor | None = None,
        log_qz: Tensor | None = None,
    ) -> ImportanceTerms:
        """log p(x|z), log p(z) under the prior, and log q(z|x) = 0 (a point mass)."""
        log_px_z = self.likelihood.log_prob(self.decode_params(z, x, y), x)
        return ImportanceTerms(
            log_px_z=log_px_z, log_pz=self._log_prior(z, y), log_qz=torch.zeros_like(log_px_z)
        )

    def kl(
        self,
        posterior: Posterior,
        z: Tensor,
        *,
        y: Tensor | None = None,
        log_qz: Tensor | None = None,
    ) -> Tensor:
        """KL(q || p) = -log p(z_q) for a point mass q on the code z_q: (B,)."""
        return -self._log_prior(posterior.mode(), y)

    def _log_prior(self, z: Tensor, y: Tensor | None) -> Tensor:
        """log p(z) of flat codes (..., B, D h w) -> (..., B), in float32."""
        indices = self.indices_of(z)
        flat = indices.reshape(-1, *self.grid)
        if y is not None and z.dim() == 3:
            y = y.repeat(z.shape[0])
        return self.prior.log_prob_indices(flat, y=y).view(indices.shape[:-2])

    def measures(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """Codebook usage (the share of entries used by x's codes) and perplexity (the
        effective number of entries used), without gradients."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            indices = torch.cat([self.code_indices(part) for part in x.split(1024)])
        self.train(was_training)
        size = self.config.codebook_size
        return {
            "codebook_usage": usage_share(indices, size),
            "perplexity": perplexity(indices, size),
        }
