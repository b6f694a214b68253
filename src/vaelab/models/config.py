"""The model's configuration: everything needed to rebuild it, saved beside its weights."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from vaelab.errors import VaelabError

ARCHITECTURES = ("mlp", "conv")
LIKELIHOOD_NAMES = ("bernoulli", "gaussian")
ACTIVATIONS = ("relu", "tanh", "elu", "gelu", "silu", "leaky_relu")
NOISE_KINDS = ("gaussian", "mask")
AUTOREGRESSIVE_KINDS = ("none", "linear", "local", "local-z", "gated")
MAX_CONTEXT_VALUES = 4096  # linear context: a (P, P) weight; 16.8M parameters at this size
OBJECTIVES = ("elbo", "iwae")
CODEBOOK_UPDATES = ("ema", "loss")
DIP_TYPES = ("i", "ii")
DEFAULT_GAMMA = {"btcvae": 1.0, "factorvae": 40.0}  # Chen et al.'s; within Kim & Mnih's sweep
PRIORS = ("normal", "vamp", "mog")  # N(0, I); Tomczak & Welling's VampPrior; a learned mixture
FLOWS = ("none", "iaf", "planar")  # Kingma et al. 2016; Rezende & Mohamed 2015
HIERARCHICAL = ("hvae", "ladder")  # the models of several stochastic layers (hierarchical.py)
LEARNED_PRIOR_MODELS = ("vae", *HIERARCHICAL)
DEFAULT_LATENT_DIMS = (100, 50)  # Burda et al.'s (2015) two stochastic layers
MAX_TRAIN_K = 5000  # each step decodes batch_size * k codes; Burda et al. trained with k <= 50


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise VaelabError(f"unknown {what} '{value}': use one of {', '.join(choices)}")


@dataclass(frozen=True)
class ModelConfig:
    """How to build a model. Fields that do not apply to a model kind are ignored by it."""

    # "vae", "ae" (standard), "dae" (denoising), "vqvae" (vector-quantised), the disentangling
    # VAEs "btcvae" (beta-TCVAE), "factorvae" and "dipvae", or the conditional VAE "cvae" and
    # the semi-supervised "m2"
    model: str = "vae"
    data_shape: tuple[int, int, int] = (1, 28, 28)  # (C, H, W), taken from the data
    latent_dim: int = 2  # 2 so the latent space can be drawn; 20-50 for likelihood work
    architecture: str = "mlp"
    hidden_dims: tuple[int, ...] = (400,)  # mlp: the classic 784-400-D-400-784 of Kingma & Welling
    conv_channels: tuple[int, ...] = (32, 64, 128, 256)  # conv: channels per stride-2 level
    activation: str = "relu"
    likelihood: str = "bernoulli"  # "bernoulli" (data in [0, 1]) or "gaussian"
    sigma: float | None = None  # gaussian: fixed std, or None to learn one shared std
    autoregressive: str = "none"  # "local"/"linear": the decoder also sees preceding pixels
    beta: float = 1.0  # vae: weight of the KL term (beta-VAE, Higgins et al. 2017)
    objective: str = "elbo"  # vae: "elbo", or "iwae" (importance-weighted, Burda et al. 2015)
    k: int = 1  # vae: samples of z per example (the IWAE bound's k; averaged for "elbo")
    noise: str = "gaussian"  # dae: "gaussian" (additive) or "mask" (pixels set to zero)
    noise_level: float = 0.3  # dae: noise std, or the fraction of pixels masked
    codebook_size: int = 128  # vqvae: K entries (the paper's ImageNet model had 512)
    code_dim: int = 16  # vqvae: D, the size of each entry; latent_dim becomes D * h * w
    codebook_update: str = "ema"  # vqvae: "ema" (the paper's appendix) or "loss" (its eq. 3)
    commitment: float = 0.25  # vqvae: beta of the commitment loss (the paper's value)
    # vae: Burgess et al. (2018) capacity C in nats (0: off): the loss is recon +
    # capacity_gamma * |KL - C_t|, with C_t rising from 0 to C over the KL warm-up
    capacity: float = 0.0
    capacity_gamma: float = 1000.0  # the paper's gamma for dSprites
    # btcvae: weights of the index-code MI (alpha), total correlation (beta) and dimension-wise
    # KL (gamma); factorvae: gamma weighs the total correlation. None: the model's default
    alpha: float = 1.0
    gamma: float | None = None
    dataset_size: int | None = None  # btcvae: N of the minibatch-weighted estimator; from the data
    dip_type: str = "i"  # dipvae: "i" (Cov of the means) or "ii" (plus the mean variance)
    lambda_od: float = 10.0  # dipvae: weight of the off-diagonal covariance penalty
    lambda_d: float | None = (
        None  # dipvae: of the diagonal one; None: 10 lambda_od (i), lambda_od (ii)
    )
    discriminator_hidden: tuple[int, ...] = (1000,) * 5  # factorvae: Kim & Mnih's 6-layer MLP
    discriminator_lr: float = 1e-4  # factorvae: Adam(betas 0.5, 0.9) as in the paper
    # cvae, m2: the number of classes K of the label condition, taken from the data
    classes: int = 0
    # cvae: condition on these quadrants of the image instead of a label (see conditions.py):
    # "top-left", ..., or "left", "top", ...; stored as the canonical comma-joined quadrants
    observe: str | None = None
    conditional_prior: bool = False  # cvae: a learned p(z|y) instead of N(0, I)
    # m2: the weight w of the mean classification loss of the labelled images (Kingma et al.
    # 2014, eq. 9); None: 0.1 N / N_l, their alpha = 0.1 N per labelled image (see m2.py)
    classifier_weight: float | None = None
    labelled_size: int | None = None  # m2: how many training images have labels; from the data
    # vae, hvae, ladder: the prior p(z) (of the top layer for a hierarchy): "normal" N(0, I),
    # "vamp" (a mixture of the posteriors of learned pseudo-inputs), "mog" (a learned mixture)
    prior: str = "normal"
    pseudo_inputs: int = 500  # vamp: K pseudo-inputs (Tomczak & Welling 2018 used 500)
    components: int = 10  # mog: K mixture components
    flow: str = "none"  # vae: "iaf" or "planar" steps after the Gaussian posterior
    flow_steps: int = 2  # vae: how many flow steps
    # hvae, ladder: the latent sizes of the stochastic layers, from the one next to x up;
    # latent_dim becomes their sum (a code is the layers' values side by side)
    latent_dims: tuple[int, ...] | None = None
    ar_layers: int = 4  # autoregressive "gated": how many gated masked layers

    def __post_init__(self) -> None:
        # JSON gives lists; keep tuples so the config stays hashable and comparable.
        for name in ("data_shape", "hidden_dims", "conv_channels", "discriminator_hidden"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        from vaelab.models import MODELS  # the registry imports this module: import it late

        _check_choice(self.model, tuple(MODELS), "model")
        self._settle_hierarchy()
        has_prior = MODELS[self.model].has_prior
        _check_choice(self.architecture, ARCHITECTURES, "architecture")
        _check_choice(self.likelihood, LIKELIHOOD_NAMES, "likelihood")
        _check_choice(self.activation, ACTIVATIONS, "activation")
        _check_choice(self.noise, NOISE_KINDS, "noise")
        _check_choice(self.autoregressive, AUTOREGRESSIVE_KINDS, "autoregressive decoder")
        _check_choice(self.objective, OBJECTIVES, "objective")
        _check_choice(self.codebook_update, CODEBOOK_UPDATES, "codebook update")
        if isinstance(self.k, bool) or int(self.k) != self.k or not 0 < self.k <= MAX_TRAIN_K:
            raise VaelabError(
                f"k (samples per example) must be between 1 and {MAX_TRAIN_K}, got {self.k}"
            )
        if (self.objective != "elbo" or self.k != 1) and not has_prior:
            raise VaelabError(
                f"--objective {self.objective} --k {self.k} needs a vae: a {self.model} has one "
                "code per input, not a distribution to sample"
            )
        if isinstance(self.latent_dim, bool) or int(self.latent_dim) != self.latent_dim:
            raise VaelabError(f"latent size must be a whole number, got {self.latent_dim!r}")
        if self.latent_dim <= 0:
            raise VaelabError(f"latent size must be positive, got {self.latent_dim}")
        if len(self.data_shape) != 3 or min(self.data_shape) <= 0:
            raise VaelabError(
                f"data shape must be three positive sizes (C, H, W), got {self.data_shape}"
            )
        if any(h <= 0 for h in self.hidden_dims):
            raise VaelabError(f"hidden sizes must be positive, got {self.hidden_dims}")
        if not self.conv_channels or any(c <= 0 for c in self.conv_channels):
            raise VaelabError(f"conv channels must be positive, got {self.conv_channels}")
        if self.autoregressive != "none" and not has_prior:
            raise VaelabError(
                f"--autoregressive {self.autoregressive} needs a vae: an autoencoder's decoder "
                "could copy x through it and leave the code unused"
            )
        n_values = math.prod(self.data_shape)
        if self.autoregressive == "linear" and n_values > MAX_CONTEXT_VALUES:
            raise VaelabError(
                f"--autoregressive linear needs images of at most {MAX_CONTEXT_VALUES} values "
                f"(C x H x W); this data has {n_values}: use --image-size to shrink it"
            )
        if self.sigma is not None and not self.sigma > 0:
            raise VaelabError(f"sigma must be positive (or omitted to learn it), got {self.sigma}")
        if not (self.beta >= 0 and math.isfinite(self.beta)):
            raise VaelabError(f"beta must be zero or a positive finite number, got {self.beta}")
        if self.model == "dae":  # the other models ignore the noise options
            upper = 1.0 if self.noise == "mask" else math.inf
            if not 0 <= self.noise_level <= upper:
                allowed = "[0, 1] (the masked fraction)" if self.noise == "mask" else "0 or more"
                raise VaelabError(
                    f"noise level {self.noise_level} is out of range for {self.noise} noise: "
                    f"use {allowed}"
                )
        if self.model == "vqvae":
            self._settle_vqvae()
        self._settle_regularisers()
        self._settle_conditioning(MODELS[self.model].conditional)
        self._settle_frontier()

    def _settle_hierarchy(self) -> None:
        """A hierarchy's layer sizes (default: Burda et al.'s 100 and 50), and latent_dim their
        sum; --latent-dims is refused for the models of one stochastic layer."""
        dims = self.latent_dims
        if self.model not in HIERARCHICAL:
            if dims is not None:
                raise VaelabError(
                    f"--latent-dims is for --model hvae or ladder, not --model {self.model}: "
                    "use --latent-dim for one stochastic layer"
                )
            return
        if dims is None:
            dims = DEFAULT_LATENT_DIMS
        try:
            dims = tuple(_whole(v) for v in dims)  # a str is refused: "64,32" is the CLI's
        except (TypeError, ValueError):
            raise VaelabError(f"latent sizes must be whole numbers, got {dims!r}") from None
        if len(dims) < 2 or min(dims) <= 0:
            raise VaelabError(
                f"a {self.model} needs two or more positive latent sizes (say --latent-dims "
                f"64,32), got {','.join(map(str, dims))}"
            )
        default_dim = next(f.default for f in fields(self) if f.name == "latent_dim")
        if self.latent_dim not in (default_dim, sum(dims)):
            raise VaelabError(
                f"a {self.model}'s code size is the sum of its --latent-dims "
                f"({','.join(map(str, dims))} make {sum(dims)}), not --latent-dim "
                f"{self.latent_dim}: set the layers' sizes with --latent-dims"
            )
        object.__setattr__(self, "latent_dims", dims)
        object.__setattr__(self, "latent_dim", sum(dims))

    def _settle_frontier(self) -> None:
        """Check the learned priors', flows' and gated decoder's options."""
        _check_choice(self.prior, PRIORS, "prior")
        _check_choice(self.flow, FLOWS, "flow")
        if self.prior != "normal" and self.model not in LEARNED_PRIOR_MODELS:
            raise VaelabError(
                f"--prior {self.prior} is for --model vae, hvae or ladder, not --model {self.model}"
            )
        if self.flow != "none" and self.model != "vae":
            raise VaelabError(f"--flow is for --model vae, not --model {self.model}")
        for name in ("pseudo_inputs", "components", "flow_steps", "ar_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise VaelabError(
                    f"--{name.replace('_', '-')} must be a positive whole number, got {value!r}"
                )

    def _settle_conditioning(self, conditional: bool) -> None:
        """Check the conditional models' options (cvae, m2) and canonicalise --observe."""
        from vaelab.models.conditions import parse_observed  # imports the package: import late

        if self.observe is not None:
            if self.model != "cvae":
                raise VaelabError(f"--observe is for --model cvae, not --model {self.model}")
            object.__setattr__(self, "observe", parse_observed(self.observe))
            if min(self.data_shape[1:]) < 2:
                raise VaelabError(
                    f"--observe needs images of at least 2 x 2 pixels, got {self.data_shape}"
                )
        if self.conditional_prior and self.model != "cvae":
            raise VaelabError(f"--conditional-prior is for --model cvae, not --model {self.model}")
        if self.classifier_weight is not None:
            if self.model != "m2":
                raise VaelabError(
                    f"--classifier-weight is for --model m2, not --model {self.model}"
                )
            _check_weight(self.classifier_weight, "classifier_weight")
        classes = self.classes
        if isinstance(classes, bool) or int(classes) != classes or classes < 0:
            raise VaelabError(f"classes must be a whole number, 0 or more, got {classes!r}")
        if conditional and self.autoregressive != "none":
            raise VaelabError(f"--autoregressive is not available for a {self.model}")
        if self.model == "m2" and (self.objective != "elbo" or self.k != 1):
            raise VaelabError(
                "an m2 trains on the ELBO with one sample: --objective iwae and --k do not apply"
            )
        size = self.labelled_size
        if size is not None and (isinstance(size, bool) or int(size) != size or size < 0):
            raise VaelabError(f"labelled_size must be a whole number, got {size!r}")

    def _settle_regularisers(self) -> None:
        """Check the disentangling objectives' options and fill in the defaults that depend on
        the model (gamma, lambda_d), so that the saved config states the weights used."""
        _check_choice(self.dip_type, DIP_TYPES, "DIP-VAE type")
        for name in ("capacity", "capacity_gamma", "alpha", "lambda_od", "discriminator_lr"):
            _check_weight(getattr(self, name), name)
        if self.gamma is None and self.model in DEFAULT_GAMMA:
            object.__setattr__(self, "gamma", DEFAULT_GAMMA[self.model])
        if self.lambda_d is None and self.model == "dipvae":
            factor = 10.0 if self.dip_type == "i" else 1.0  # Kumar et al. 2018, sec. 3
            object.__setattr__(self, "lambda_d", factor * self.lambda_od)
        for name in ("gamma", "lambda_d"):
            if getattr(self, name) is not None:
                _check_weight(getattr(self, name), name)
        if not self.discriminator_lr > 0:
            raise VaelabError(f"--discriminator-lr must be positive, got {self.discriminator_lr}")
        if any(h <= 0 for h in self.discriminator_hidden):
            raise VaelabError(
                f"discriminator hidden sizes must be positive, got {self.discriminator_hidden}"
            )
        if self.dataset_size is not None and (
            isinstance(self.dataset_size, bool)
            or int(self.dataset_size) != self.dataset_size
            or self.dataset_size < 1
        ):
            raise VaelabError(
                f"dataset_size must be a positive whole number, got {self.dataset_size}"
            )
        disentangling = self.model in ("btcvae", "factorvae", "dipvae") or self.capacity > 0
        if disentangling and (self.objective != "elbo" or self.k != 1):
            what = "--capacity" if self.model == "vae" else f"a {self.model}"
            raise VaelabError(
                f"{what} trains on the ELBO with one sample: --objective iwae and --k do not apply"
            )
        if self.capacity > 0 and self.model != "vae":
            raise VaelabError(f"--capacity is for --model vae, not a {self.model}")

    def _settle_vqvae(self) -> None:
        """A VQ-VAE's networks are always convolutional, and its code is the quantised grid,
        flattened: D * h * w values, whatever --latent-dim said."""
        for name in ("codebook_size", "code_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value <= 0:
                raise VaelabError(
                    f"--{name.replace('_', '-')} must be a positive whole number, got {value}"
                )
        if not (self.commitment >= 0 and math.isfinite(self.commitment)):
            raise VaelabError(f"--commitment must be zero or positive, got {self.commitment}")
        if self.objective != "elbo" or self.k != 1:
            raise VaelabError(
                "a vqvae's posterior is a point mass: --objective iwae and --k do not apply"
            )
        if self.autoregressive != "none":
            raise VaelabError("--autoregressive is for a vae's decoder, not a vqvae's")
        object.__setattr__(self, "architecture", "conv")
        height, width = code_grid(self)
        object.__setattr__(self, "latent_dim", self.code_dim * height * width)


def _whole(value: object) -> int:
    if isinstance(value, (bool, str)) or int(value) != value:  # type: ignore[call-overload]
        raise ValueError(value)
    return int(value)  # type: ignore[call-overload]


def _check_weight(value: float, name: str) -> None:
    if isinstance(value, bool) or not (value >= 0 and math.isfinite(value)):
        raise VaelabError(
            f"--{name.replace('_', '-')} must be zero or a positive finite number, got {value}"
        )


def code_grid(config: ModelConfig) -> tuple[int, int]:
    """The (h, w) grid a VQ-VAE encodes images of `config.data_shape` to: the size after the
    stride-2 levels of `conv_channels` (28 x 28 -> 7 x 7 with two or more levels)."""
    from vaelab.models.networks import conv_level_sizes  # networks imports this module

    _, height, width = config.data_shape
    return conv_level_sizes(height, width, len(config.conv_channels))[-1]
