"""Published numbers the experiments compare with, each with its source.

Copied from the project's shared `REFERENCES.md`; the reports quote them from here, never by
hand. Percentages are given as fractions (0.0503 = 5.03%).
"""

from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
  """One published number: its value, what it measures, and where it was published."""
  value: float
  quantity: str
  source: str


ZHANG_2019 = "Zhang 2019, Making Convolutional Networks Shift-Invariant Again, ImageNet"
AZULAY_WEISS_2019 = "Azulay & Weiss 2019, JMLR 20(184), ResNet-50 on ImageNet"
COHEN_WELLING_2016 = "Cohen & Welling 2016, Group Equivariant CNNs, rotated MNIST"
HE_2016_TABLE_6 = "He et al. 2016, Table 6, CIFAR-10 with augmentation"
# REFERENCES.md states Springenberg et al.'s claim, not their numbers: these three are the
# paper's Table 3 as recalled when the pooling section was written (no copy of the table could be
# retrieved then), and the report says so.
SPRINGENBERG_2015_TABLE_3 = ("Springenberg et al. 2015, Striving for Simplicity, Table 3, "
                             "CIFAR-10 without augmentation (recalled, not verified)")

PUBLISHED = {
    "zhang_resnet18_consistency": Published(0.8511, "consistency, ResNet-18", ZHANG_2019),
    "zhang_resnet18_blur_consistency": Published(0.8825, "consistency, ResNet-18 + Bin-5 blur",
                                                 ZHANG_2019),
    "zhang_resnet18_accuracy": Published(0.6974, "top-1 accuracy, ResNet-18", ZHANG_2019),
    "zhang_resnet18_blur_accuracy": Published(0.7138, "top-1 accuracy, ResNet-18 + Bin-5 blur",
                                              ZHANG_2019),
    "zhang_resnet50_consistency": Published(0.8920, "consistency, ResNet-50", ZHANG_2019),
    "zhang_resnet50_blur_consistency": Published(0.9131, "consistency, ResNet-50 + Bin-5 blur",
                                                 ZHANG_2019),
    "azulay_p_change_crop": Published(0.061, "P(top-1 change), 1-px diagonal crop shifts",
                                      AZULAY_WEISS_2019),
    "azulay_p_change_black_canvas": Published(0.20, "P(top-1 change), image on a black canvas",
                                              AZULAY_WEISS_2019),
    "cohen_welling_cnn_error": Published(0.0503, "test error, plain CNN", COHEN_WELLING_2016),
    "cohen_welling_p4cnn_error": Published(0.0228, "test error, P4CNN", COHEN_WELLING_2016),
    "he_resnet20_error": Published(0.0875, "test error, ResNet-20", HE_2016_TABLE_6),
    "he_resnet32_error": Published(0.0751, "test error, ResNet-32", HE_2016_TABLE_6),
    "he_resnet44_error": Published(0.0717, "test error, ResNet-44", HE_2016_TABLE_6),
    "he_resnet56_error": Published(0.0697, "test error, ResNet-56", HE_2016_TABLE_6),
    "springenberg_model_c_error": Published(0.0974, "test error, Model C (max pooling)",
                                            SPRINGENBERG_2015_TABLE_3),
    "springenberg_strided_cnn_c_error": Published(
        0.1019, "test error, Strided-CNN-C (pooling removed, conv at stride 2)",
        SPRINGENBERG_2015_TABLE_3),
    "springenberg_all_cnn_c_error": Published(
        0.0908, "test error, All-CNN-C (pooling replaced by a stride-2 conv)",
        SPRINGENBERG_2015_TABLE_3),
}


def published_table(keys: tuple[str, ...] = tuple(PUBLISHED)) -> str:
  """A Markdown table of the published numbers `keys` (quantity, value in %, source)."""
  unknown = [key for key in keys if key not in PUBLISHED]
  if unknown:
    raise ValueError(f"keys must be among {sorted(PUBLISHED)}, got unknown {unknown}")
  rows = [f"| {PUBLISHED[key].quantity} | {100 * PUBLISHED[key].value:.2f}% | "
          f"{PUBLISHED[key].source} |" for key in keys]
  return "\n".join(["| published quantity | value | source |", "|---|---|---|", *rows])
