"""What exists: the names of datasets, methods, estimators and objectives, and how a method is
shown in the paper.

A leaf module (no imports), read by :mod:`vaeinf.config`, the workflow's schema check and the
Snakefile's wildcard constraints, so that none of them loads torch. The classes behind the names
are looked up above it (:data:`vaeinf.core.methods.REGISTRY`, :data:`vaeinf.core.data.LOADERS`); a
test checks that both registries list exactly these names.
"""

#: Datasets by name (loaders in :mod:`vaeinf.core.data`).
DATASETS = ("digits", "binarized_mnist", "mnist")

#: Encoder gradient estimators (:func:`vaeinf.core.bounds.loss`).
ESTIMATORS = ("standard", "stl", "dreg")

#: Training objectives (:func:`vaeinf.core.bounds.bound`): the ELBO, L_K, and Rainforth et al.
#: (2018)'s MIWAE(M, K / M), CIWAE(beta) and PIWAE(M, K / M) on the K samples of a point.
OBJECTIVES = ("elbo", "iwae", "miwae", "ciwae", "piwae")

#: Objectives over M groups of the K samples (``method_options.groups``, which divides K).
GROUPED_OBJECTIVES = ("miwae", "piwae")

#: Objectives whose encoder gradient DReG estimates: importance-weighted bounds (of each group).
DREG_OBJECTIVES = ("iwae", "miwae", "piwae")

#: Inference methods by name -> the encoder gradient estimators each supports (classes in
#: :mod:`vaeinf.core.methods`; options in :data:`vaeinf.config.METHOD_OPTIONS`).
METHODS = {
    "vae": ("standard", "stl"),
    "iwae": ("standard", "stl", "dreg"),
    "flow": ("standard",),
    "autoregressive": ("standard",),
    "avb": ("standard",),
    "semi_amortized": ("standard", "stl", "dreg"),
}

#: The objective each method trains when its options name none (the methods' own
#: ``default_objective``; a test checks that they agree).
DEFAULT_OBJECTIVES = {
    "vae": "elbo",
    "iwae": "iwae",
    "flow": "iwae",
    "autoregressive": "iwae",
    "avb": "elbo",
    "semi_amortized": "iwae",
}

#: How the paper names each method (tables, figures, text). A study's variant is shown by its
#: ``label`` (default: its name); see :func:`vaeinf.study.grid.labels`.
LABELS = {
    "vae": "VAE",
    "iwae": "IWAE",
    "flow": "Flow",
    "autoregressive": "IAF",
    "avb": "AVB",
    "semi_amortized": "SA-VAE",
}

#: A variant's name: a path segment of the run directory (lower case, no ``/``).
VARIANT_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
