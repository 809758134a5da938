"""The custom trainer shipped inside the ``trainer_class`` test release, in the form SCT's loader reads.

SCT (``spinalcordtoolbox/deepseg/nnunet.py``, ``load_trainer_class_if_available``) executes
``<nnUNetTrainer* folder>/trainer_class.py`` and passes ``get_trainer_class()`` to the NeuroPoly fork's
``initialize_from_trained_model_folder(..., trainer_class=...)``; stock nnU-Net looks the checkpoint's
``trainer_name`` up inside the installed nnunetv2 package instead, where this class does not exist.

It is a realistic custom trainer: AdamW instead of SGD, the plans' network unchanged. ``build.py`` trains the
release with this very file and copies it into the zip.
"""

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerFormatsAdamW(nnUNetTrainer):  # noqa: N801 - nnU-Net's trainer naming
    """nnUNetTrainer trained with AdamW; the network is the plans' network, so only the lookup by name differs."""

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


def get_trainer_class():
    """What SCT's ``load_trainer_class_if_available`` calls."""
    return nnUNetTrainerFormatsAdamW
