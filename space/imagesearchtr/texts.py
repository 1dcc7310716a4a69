"""Which texts are valid Unicode: what a caption, a file name or a query must be to be kept.

Reads and writes nothing. Torch-free (only the standard library), so the pipeline's input
reader (pipeline/inputs.py, imported by commands that never load a model), the encoder and the
app all read the one rule from here.
"""

from __future__ import annotations


def is_valid_unicode(text: str) -> bool:
    """False for text with lone surrogates ("\\ud800"): JSON can carry one, UTF-8 cannot."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
