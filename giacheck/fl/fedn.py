"""A Scaleout Edge (FEDn) client's train callback, called in-process for one round.

The callback is the function a client registers with ``set_train_callback``: ``train(in_model, client_settings)
-> (out_model, {"training_metadata": {...}})``, ``in_model``/``out_model`` ``scaleoututil`` ``ScaleoutModel``s
holding the model as an ordered list of arrays (``numpyhelper``, the global model's ``state_dict`` order). The
round's ``client_settings`` carry the local training under the keys the training metadata reports
(``lr``, ``epochs``, ``batch_size``); the metadata must hold ``num_examples`` > 0, as FEDn's client runtime
requires, and the ``lr``/``epochs`` it reports are what the replica reruns (FEDn sends them to the server).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from giacheck.fl.capture import CaptureError, Sent
from giacheck.fl.load import load_object, require

__all__ = ["FednClient"]

_EXTRA = "fedn"
_MODULE = "scaleoututil"


@dataclass(frozen=True, slots=True)
class FednClient:
    """A FEDn train callback to capture (``pkg.mod:train``)."""

    target: str
    framework = "fedn"

    def describe(self) -> dict[str, Any]:
        return {"framework": self.framework, "target": self.target}

    def version(self) -> str:
        from importlib.metadata import version

        require(_MODULE, _EXTRA)
        return f"scaleoututil {version('scaleoututil')}"

    def check(self) -> None:
        """Import scaleoututil and the callback, and check it is callable, before any compute."""
        if not callable(self._load()):
            raise CaptureError(f"{self.target} is not callable; valid: train(in_model, client_settings)")

    def run_round(self, state: dict[str, Any], settings: dict[str, Any]) -> Sent:
        train = self._load()
        from scaleoututil.helpers.helpers import get_helper
        from scaleoututil.utils.model import ScaleoutModel

        helper = get_helper("numpyhelper")
        in_model = ScaleoutModel.from_training_model(list(state.values()), helper)
        client_settings = {"lr": settings["lr"], "epochs": settings["local-epochs"],
                           "batch_size": settings["batch-size"]}
        try:
            out = train(in_model, client_settings)
        except Exception as exc:
            raise CaptureError(f"{self.target} raised {type(exc).__name__} while training: {exc}") from exc
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], ScaleoutModel)):
            raise CaptureError(f"{self.target} returned {type(out).__name__}; valid: (ScaleoutModel, "
                               f"{{'training_metadata': {{...}}}}) as a FEDn train callback returns")
        out_model, meta = out
        metadata = meta.get("training_metadata") if isinstance(meta, dict) else None
        if not isinstance(metadata, dict) or not _positive(metadata.get("num_examples")):
            raise CaptureError(f"{self.target} returned metadata {meta!r}; valid: {{'training_metadata': "
                               f"{{'num_examples': N > 0, ...}}}}, which FEDn's client requires")
        try:
            arrays = out_model.get_training_model(helper)
        except Exception as exc:
            raise CaptureError(f"{self.target} returned a model numpyhelper cannot read: {exc}") from exc
        return Sent(arrays=list(arrays), metadata=dict(metadata), called="train(in_model, client_settings)")

    def _load(self) -> Any:
        require(_MODULE, _EXTRA)
        return load_object(self.target, what="FEDn train callback")


def _positive(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0
