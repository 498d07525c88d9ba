"""An optional PyTorch Lightning callback around :class:`~zfwidgets.monitor.TrainingMonitor`.

Lightning is not a dependency of zfwidgets: it is imported when :func:`MonitorCallback` is
called, never at module import.
"""

from __future__ import annotations

from typing import Any

from . import TrainingMonitor

__all__ = ["MonitorCallback"]


def _callback_base() -> type:
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError as e:
            raise ImportError(
                "MonitorCallback needs PyTorch Lightning: pip install lightning"
            ) from e
    return Callback


def MonitorCallback(probe: Any = None, **options: Any):  # noqa: N802 - a class factory
    """A Lightning ``Callback`` that feeds a :class:`TrainingMonitor` (built at fit start on
    ``pl_module``). ``callback.monitor`` is the monitor: display it, save it.

    Each training batch records ``outputs["loss"]`` (or the output itself when it is a
    tensor); each training
    epoch end records the other logged metrics (``val_loss`` ...) and takes a snapshot.

    Examples
    --------
    Not run as a doctest: it needs PyTorch Lightning, which zfwidgets does not depend on.

    >>> cb = MonitorCallback(probe=x_val[:64])  # doctest: +SKIP
    >>> trainer = L.Trainer(callbacks=[cb]); trainer.fit(model, loaders)  # doctest: +SKIP
    >>> cb.monitor.save("run.safetensors")  # doctest: +SKIP
    """
    base = _callback_base()

    class _MonitorCallback(base):
        def __init__(self) -> None:
            super().__init__()
            self.monitor: TrainingMonitor | None = None

        def on_fit_start(self, trainer, pl_module) -> None:
            if self.monitor is None:
                self.monitor = TrainingMonitor(pl_module, probe, **options)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            self.monitor.step(loss=loss)

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            # Lightning runs the epoch-end validation before this hook: its metrics are here
            metrics = {
                k: v for k, v in trainer.callback_metrics.items() if not k.startswith("train")
            }
            self.monitor.epoch_end(**metrics)

    return _MonitorCallback()
