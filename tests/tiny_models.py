"""Tiny untrained models of every kind tiled inference opens (seconds to make, no training).

Each is written in its family's own file format: an nnU-Net v2 result folder (plans.json,
dataset.json, ``fold_all/checkpoint_final.pth`` with the network nnU-Net builds from the
plans), an active-learning HRNet model file, a Keras ``.keras`` file with its sidecar.
"""

from __future__ import annotations

import json
from pathlib import Path

CLASSES = ["background", "bone", "implant"]


def _architecture(dims: int, features=(4, 8, 16)) -> dict:
    conv = f"torch.nn.modules.conv.Conv{dims}d"
    norm = f"torch.nn.modules.instancenorm.InstanceNorm{dims}d"
    n = len(features)
    return {
        "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
        "arch_kwargs": {
            "n_stages": n,
            "features_per_stage": list(features),
            "conv_op": conv,
            "kernel_sizes": [[3] * dims] * n,
            "strides": [[1] * dims] + [[2] * dims] * (n - 1),
            "n_conv_per_stage": [1] * n,
            "n_conv_per_stage_decoder": [1] * (n - 1),
            "conv_bias": True,
            "norm_op": norm,
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _configuration(dims: int, normalization: str) -> dict:
    return {
        "data_identifier": f"nnUNetPlans_{dims}d",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": [16] * dims,
        "median_image_size_in_voxels": [32] * dims,
        "spacing": [0.005] * dims,
        "normalization_schemes": [normalization],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0},
        "architecture": _architecture(dims),
        "batch_dice": True,
    }


def tiny_nnunet(
    folder: Path,
    configuration: str = "2d",
    channels: int = 1,
    normalization: str = "CTNormalization",
    seed: int = 0,
) -> Path:
    """An nnU-Net result folder ``folder/nnUNetTrainer__nnUNetPlans__<configuration>``.

    The network is the one nnU-Net's trainer builds from these plans (3 stages, 4-16
    features, total stride 4), with seeded random weights; intensities are normalised
    by ``normalization`` (CT: fixed foreground statistics; z-score: per image).
    """
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dims = 2 if configuration == "2d" else 3
    plans = {
        "dataset_name": "Dataset999_Tiny",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [0.005] * 3,
        "original_median_shape_after_transp": [32, 32, 32],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {configuration: _configuration(dims, normalization)},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {
                "max": 255.0,
                "mean": 120.0,
                "median": 120.0,
                "min": 0.0,
                "percentile_00_5": 5.0,
                "percentile_99_5": 250.0,
                "std": 50.0,
            }
            for c in range(channels)
        },
    }
    dataset = {
        "channel_names": {str(c): "CT" for c in range(channels)},
        "labels": {name: i for i, name in enumerate(CLASSES)},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    result = folder / f"nnUNetTrainer__nnUNetPlans__{configuration}"
    (result / "fold_all").mkdir(parents=True)
    (result / "plans.json").write_text(json.dumps(plans, indent=1))
    (result / "dataset.json").write_text(json.dumps(dataset, indent=1))
    manager = PlansManager(plans)
    torch.manual_seed(seed)
    network = nnUNetTrainer.build_network_architecture(
        manager, manager.get_configuration(configuration), channels, len(CLASSES), False
    )
    torch.save(
        {
            "network_weights": network.state_dict(),
            "trainer_name": "nnUNetTrainer",
            "init_args": {"configuration": configuration},
            "inference_allowed_mirroring_axes": tuple(range(dims)),
        },
        result / "fold_all" / "checkpoint_final.pth",
    )
    return result


def tiny_hrnet(path: Path, in_channels: int = 1, seed: int = 0) -> Path:
    """An active-learning HRNet model file (``mdlma al``'s format), untrained, seeded."""
    import torch

    from unified_framework.active_learning.model import ALModel, save_al_model
    from unified_framework.networks import HRNetConfig, HRNetSeg
    from unified_framework.sun.model_package import Normalization

    config = HRNetConfig(in_channels=in_channels, num_classes=len(CLASSES), dropout=0.0)
    torch.manual_seed(seed)
    c = in_channels
    model = ALModel(
        "hrnet",
        config,
        HRNetSeg(config).state_dict(),
        Normalization((0.0,) * c, (255.0,) * c, (100.0,) * c, (50.0,) * c),
        list(CLASSES),
    )
    return save_al_model(path, model)


def tiny_keras(path: Path, logits: bool = True) -> Path:
    """A fully convolutional 2D Keras network (``.keras``) and its sidecar (normalisation, names)."""
    import contextlib

    with contextlib.suppress(ImportError):  # before TensorFlow, or a later import crashes
        import triton  # noqa: F401
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 1))
    hidden = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    outputs = keras.layers.Conv2D(len(CLASSES), 1, activation=None if logits else "softmax")(hidden)
    keras.Model(inputs, outputs).save(path)
    sidecar = {
        "class_names": CLASSES,
        "normalization": {"mean": [100.0], "std": [50.0]},
        "outputs": "logits" if logits else "softmax",
    }
    path.with_name(path.name + ".json").write_text(json.dumps(sidecar))
    return path
