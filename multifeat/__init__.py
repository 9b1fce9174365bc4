"""multifeat: generate images that carry several specified features at once.

Layout (see README for the full tour):

- ``multifeat.data``      attribute datasets (SyntheticFaces, CelebA, image folders) and DataModules
- ``multifeat.nets``      plain ``nn.Module`` networks (DCGAN, AdaIN, StyleGAN2, GPEN, classifiers)
- ``multifeat.losses``    pure loss functions with the paper's names and default weights
- ``multifeat.phases``    one LightningModule per phase (Phase1GAN, FeatureClassifier, Phase3GAN, ...)
- ``multifeat.callbacks`` negative bank, sample grids, ...
- ``multifeat.eval``      attribute rates, FID/KID, diversity, the benchmark
- ``multifeat.io``        checkpoints and the safe loader for official StyleGAN2-ADA pickles
- ``multifeat.cli``       the ``multifeat`` / ``lightning`` command line
"""

__version__ = "0.1.0"
