"""Evaluation of generated images: feature rates, the joint rate, FID/KID and diversity.

- :mod:`multifeat.eval.evaluator` the judge: ``AttributeEvaluator``, its training, loading and caches
- :mod:`multifeat.eval.judge_data` what the judge is trained and measured on besides clean faces
  (degraded views, non-face images, robust batches) and how its trust is measured
- :mod:`multifeat.eval.metrics`   pure metric functions (rates, Wilson interval, FID, KID, diversity)
- :mod:`multifeat.eval.features`  FID/KID feature extractors (InceptionV3 if local, else the evaluator's)
- :mod:`multifeat.eval.folders`   reading a folder of images
- :mod:`multifeat.eval.evaluate`  ``evaluate_images`` / ``evaluate_generator`` and the report files

See ``docs/evaluation.md``.
"""

from multifeat.eval.evaluate import evaluate_generator, evaluate_images
from multifeat.eval.metrics import feature_rates, fid_from_features, joint_rate, wilson_interval

__all__ = ["evaluate_generator", "evaluate_images", "feature_rates", "fid_from_features", "joint_rate", "wilson_interval"]
