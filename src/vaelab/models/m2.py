"""The semi-supervised VAE M2 (Kingma, Rezende, Mohamed & Welling 2014): a classifier q(y|x), an
encoder q(z|x, y) and a decoder p(x|y, z), with p(y) uniform over K classes and p(z) = N(0, I).

Labelled images (y >= 0) contribute the bound L(x, y) (eq. 6) and a classification loss;
unlabelled ones (y = -1, or no y) marginalise y exactly (eq. 7):

    -U(x) = sum_y q(y|x) (-L(x, y)) - H(q(y|x)).

The objective (eq. 8-9) sums the bounds over the N training images, N_l labelled and N_u not,
and adds alpha times the classification loss, alpha = 0.1 N. In this project's convention (nats
per image) it is divided by N, and the classification loss is a mean over the labelled images:

    loss = (N_l / N) mean_l(-L) + (N_u / N) mean_u(-U) + w mean_l(-log q(y|x)),

with one batch of each kind at every step (the trainer draws them). The paper's alpha = 0.1 N
per labelled image gives the default w = 0.1 N / N_l (54 for 100 labels among 54,000 images),
the weighting of public re-implementations (0.1 N_u / N_l in semi-supervised-pytorch; Pyro's
example uses 46); `classifier_weight` sets w. Read as alpha / N = 0.1 on the mean, the
classifier drifts: measured on MNIST with 100 labels, its validation accuracy fell from 0.56
to 0.45 over the first 8 epochs. A batch of one kind alone (validation, or a run with every
label, where w = 0.1) weighs its bound by 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import VaelabError
from vaelab.models.autoencoders import LossTerms
from vaelab.models.config import ModelConfig
from vaelab.models.cvae import CVAE, plain
from vaelab.models.distributions import DiagonalGaussian
from vaelab.models.networks import build_encoder

ALPHA_PER_IMAGE = 0.1  # Kingma et al.'s alpha = 0.1 N


class M2(CVAE):
    """M2: a label-conditional VAE whose label is observed for some images and inferred by its
    classifier q(y|x) for the rest."""

    title = "Semi-supervised VAE (M2)"
    needs_dataset_size = True
    classifies = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        # q(y|x): the encoder's architecture with a K-way head (logits)
        self.classifier = build_encoder(plain(config), config.classes)

    @property
    def classifier_weight(self) -> float:
        """w, the weight of the mean classification loss: `classifier_weight`, else
        0.1 N / N_l (0.1 where the sizes are unknown, as for a run with every label)."""
        weight = self.config.classifier_weight
        if weight is not None:
            return weight
        size, labelled = self.config.dataset_size, self.config.labelled_size
        if size and labelled:
            return ALPHA_PER_IMAGE * size / labelled
        return ALPHA_PER_IMAGE

    # --- the classifier --------------------------------------------------------------------

    def classify(self, x: Tensor) -> Tensor:
        """The logits of q(y|x): x (B, C, H, W) -> (B, K)."""
        self.check_images(x)
        return self.classifier(x)

    def predict_proba(self, x: Tensor) -> Tensor:
        """q(y|x), the class probabilities: (B, K), in float32 or wider."""
        return torch.softmax(self.classify(x).float(), dim=-1)

    def labels_or_predicted(self, x: Tensor, y: Tensor | None) -> Tensor:
        """y where it is a label (>= 0); the classifier's most probable class elsewhere."""
        if y is not None:
            y = torch.as_tensor(y, device=x.device)
            if bool((y >= 0).all()):  # every label given: no need to ask the classifier
                return y
        predicted = self.classify(x).argmax(dim=-1)
        return predicted if y is None else torch.where(y >= 0, y, predicted)

    # --- the generative model, with y inferred where it is not given ---------------------------

    def prior_condition(self, x: Tensor | None, y: Tensor | None) -> Tensor | None:
        return None  # p(z) = N(0, I): the label does not reach the prior

    def encode(self, x: Tensor, y: Tensor | None = None) -> DiagonalGaussian:
        """q(z|x, y); where y is missing (None or -1), y is the classifier's most probable
        class."""
        self.check_images(x)
        return super().encode(x, self.labels_or_predicted(x, y))

    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        y = self.labels_or_predicted(x, y)
        return self.decode(self.encode(x, y).mode(), y)

    def interpolate(
        self,
        x_a: Tensor,
        x_b: Tensor,
        steps: int = 10,
        *,
        spherical: bool = False,
        y: Tensor | None = None,
    ) -> Tensor:
        """As the cvae's; without a label y, the path has the class the classifier gives x_a."""
        if y is None:
            y = self.classify(x_a[None]).argmax(dim=-1)
        return super().interpolate(x_a, x_b, steps, spherical=spherical, y=y)

    def sample(
        self,
        n: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
        z: Tensor | None = None,
    ) -> Tensor:
        """n images of the labels y, or of labels drawn from p(y) (uniform) when y is None."""
        if y is None:
            drawn_on = generator.device if generator is not None else self.device
            y = torch.randint(self.classes, (n,), generator=generator, device=drawn_on).to(
                self.device
            )
        return super().sample(n, y=y, generator=generator, z=z)

    # --- the objective -----------------------------------------------------------------------

    def _bound_terms(
        self, x: Tensor, y: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """-E_q[log p(x|y, z)] (one sample) and KL(q(z|x, y) || p(z)), each (B,)."""
        posterior = super().encode(x, y)
        kl = self.require_prior().kl(posterior)  # closed form: p(z) = N(0, I)
        z = posterior.rsample(generator=generator)
        recon = -self.log_likelihood(self.decoder(z, self.condition.vector(y)), x)
        return recon, kl

    def negative_bound(
        self,
        x: Tensor,
        y: Tensor,
        *,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """-L(x, y) of each labelled image (eq. 6, one sample of z): -log p(x|y, z) + beta *
        kl_scale * KL(q(z|x, y) || p(z)) - log p(y), (B,)."""
        recon, kl = self._bound_terms(x, y, generator)
        return recon + self.config.beta * kl_scale * kl + math.log(self.classes)

    def _bound_weights(self, n_labelled: int, n_unlabelled: int) -> tuple[float, float]:
        """The weights of the labelled and unlabelled means: N_l / N and N_u / N (the batch's
        own shares where the sizes are not known), or 1 for a batch of one kind alone."""
        if not n_unlabelled:
            return 1.0, 0.0
        if not n_labelled:
            return 0.0, 1.0
        size, labelled = self.config.dataset_size, self.config.labelled_size
        if size and labelled is not None:
            share = labelled / size
        else:
            share = n_labelled / (n_labelled + n_unlabelled)
        return share, 1.0 - share

    def loss(
        self,
        x: Tensor,
        *,
        y: Tensor | None = None,
        kl_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> LossTerms:
        """The M2 objective above; `recon` and `kl` are the bound's terms, weighted alike
        (the unlabelled ones averaged under q(y|x)). y: labels, -1 where unknown, or None."""
        logits = self.classify(x)
        log_q = F.log_softmax(logits.float(), dim=-1)  # (B, K)
        if y is None:
            labelled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        else:
            y = torch.as_tensor(y, device=x.device)
            if y.dtype.is_floating_point or y.shape != (len(x),):
                raise VaelabError(
                    f"labels y must be whole numbers of shape ({len(x)},), got {y.dtype} "
                    f"of shape {tuple(y.shape)}"
                )
            y = y.long()
            labelled = y >= 0
        n_labelled = int(labelled.sum())
        n_unlabelled = len(x) - n_labelled
        w_labelled, w_unlabelled = self._bound_weights(n_labelled, n_unlabelled)
        weight = self.config.beta * kl_scale
        log_classes = math.log(self.classes)  # -log p(y), p(y) uniform
        total = recon = kl = log_q.new_zeros(())
        if n_labelled:
            y_l = y[labelled]
            recon_l, kl_l = self._bound_terms(x[labelled], y_l, generator)
            bound = recon_l + weight * kl_l + log_classes  # -L(x, y), (B_l,)
            cross_entropy = F.nll_loss(log_q[labelled], y_l)  # mean -log q(y|x)
            total = total + w_labelled * bound.mean() + self.classifier_weight * cross_entropy
            recon = recon + w_labelled * recon_l.mean()
            kl = kl + w_labelled * kl_l.mean()
        if n_unlabelled:
            x_u, log_q_u = x[~labelled], log_q[~labelled].T  # (B_u, ...), (K, B_u)
            k, b = log_q_u.shape
            every_y = torch.arange(k, device=x.device).repeat_interleave(b)  # (K * B_u,)
            recon_u, kl_u = self._bound_terms(x_u.repeat(k, 1, 1, 1), every_y, generator)
            recon_u, kl_u = recon_u.view(k, b), kl_u.view(k, b)
            q = log_q_u.exp()
            entropy = -(q * log_q_u).sum(dim=0)  # H(q(y|x)), (B_u,)
            bound = (q * (recon_u + weight * kl_u + log_classes)).sum(dim=0) - entropy
            total = total + w_unlabelled * bound.mean()
            recon = recon + w_unlabelled * (q * recon_u).sum(dim=0).mean()
            kl = kl + w_unlabelled * (q * kl_u).sum(dim=0).mean()
        return LossTerms(total=total, recon=recon, kl=kl)

    # --- the likelihood ----------------------------------------------------------------------

    def log_weights(
        self,
        x: Tensor,
        k: int,
        *,
        y: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Log importance weights, (K', B). With labels y: of log p(x|y), as a cvae's. Without:
        of log p(x) = log sum_y p(y) p(x|y), ceil(k / K) samples of z for each class y
        (stratified sampling of y): with p(y) = 1/K, the mean of all K' = K ceil(k / K)
        weights is sum_y p(y) mean_j w_j(y), so `log_mean_exp` gives a bound on log p(x)."""
        if y is not None:
            y = torch.as_tensor(y, device=x.device)
            if bool((y < 0).any()):
                raise VaelabError("log_weights takes labels for every image, or y=None")
            return super().log_weights(x, k, y=y, generator=generator)
        self.check_images(x)
        per_class = math.ceil(k / self.classes)
        weights = []
        for label in range(self.classes):
            y_c = torch.full((len(x),), label, dtype=torch.long, device=x.device)
            posterior = super().encode(x, y_c)
            z = posterior.rsample(k=per_class, generator=generator)
            weights.append(self.importance_terms(x, z, posterior, y=y_c).log_weights())
        return torch.cat(weights, dim=0)  # (K * ceil(k / K), B)

    def measures(self, x: Tensor, y: Tensor | None = None) -> dict[str, float]:
        """The classifier's accuracy on the labelled images of x (where labels are given)."""
        if y is None or not bool((y >= 0).any()):
            return {}
        known = y >= 0
        with torch.no_grad():
            predicted = self.classify(x[known]).argmax(dim=-1)
        return {"accuracy": float((predicted == y[known]).float().mean())}
