"""Loading a .keras file (the cached trunk, a trained model) so that a bad one fails in one line.

Its own module, apart from tlpipe.model.saving: the stages that only load (features, robustness)
then do not re-run when the saving code changes.
"""

from pathlib import Path

import keras

from tlpipe.errors import UserError, summary


def load_model_file(path: Path, remedy: str) -> keras.Model:
    """keras.models.load_model in safe mode, without custom objects (what a user's own code would do);
    a missing, truncated or corrupt file is a UserError that names it and says `remedy`."""
    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises ValueError, OSError, TypeError... for a file it cannot read
        raise UserError(f"{path}: not a Keras model tlpipe can load ({summary(error)}); {remedy}") from None
