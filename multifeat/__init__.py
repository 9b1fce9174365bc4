"""multifeat: generate images that carry several specified features at once.

Layout (see README for the full tour):

- ``multifeat.data``      attribute datasets (SyntheticFaces, CelebA, image folders) and DataModules
- ``multifeat.nets``      plain ``nn.Module`` networks (DCGAN, AdaIN, StyleGAN2, GPEN, classifiers)
- ``multifeat.losses``    pure loss functions with the paper's names and default weights
- ``multifeat.phases``    one LightningModule per phase on the shared GANModule (Phase1GAN, FeatureClassifier,
                          Phase3GAN, ConditionalGAN, StyleGAN2ADA)
- ``multifeat.callbacks`` negative bank, sample grids, progress, interrupt checkpoints, ...
- ``multifeat.mixing``    Method B's StyleMixer: projection, mixing, guided layer search
- ``multifeat.eval``      measuring only: the attribute evaluator (the judge), attribute rates, FID/KID,
                          diversity, ``evaluate``
- ``multifeat.bench``     training and comparing methods (the MultiFeat-Synth benchmark)
- ``multifeat.io``        checkpoints and the safe loader for official StyleGAN2-ADA pickles
- ``multifeat.cli``       the ``multifeat`` / ``lightning`` command line
"""

__version__ = "0.1.0"
