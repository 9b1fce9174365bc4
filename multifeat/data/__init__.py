"""Datasets and LightningDataModules: synthetic faces, CelebA attributes, image folders, Phase-2 data, the no-joint guard."""

from multifeat.data.celeba import CELEBA_DERIVED, CelebADataset
from multifeat.data.classifier_data import FeatureClassifierDataModule
from multifeat.data.common import ATTRIBUTES, SOURCE_NAMES, DataWarning
from multifeat.data.datamodule import AttributeDataModule
from multifeat.data.degrade import DEGRADE_KINDS, degrade
from multifeat.data.folder import ImageFolderDataset
from multifeat.data.guard import JointFreeDataModule, JointImageError, assert_no_joint, count_joint
from multifeat.data.switching import SwitchingDataModule
from multifeat.data.synthetic import SyntheticFaces

__all__ = [
    "ATTRIBUTES",
    "SOURCE_NAMES",
    "CELEBA_DERIVED",
    "DataWarning",
    "SyntheticFaces",
    "CelebADataset",
    "ImageFolderDataset",
    "AttributeDataModule",
    "FeatureClassifierDataModule",
    "SwitchingDataModule",
    "DEGRADE_KINDS",
    "degrade",
    "JointFreeDataModule",
    "JointImageError",
    "assert_no_joint",
    "count_joint",
]
