"""Stage three: the report, predictions for a split, and analysis of any video.

Kept light: ``python -m evaluate --help``, ``report`` and ``analyze``'s stage one must not import the
backend before they need it.
"""

# What make predict and make analyze give a frame without a face (evaluate.predict explains each).
NO_FACE_POLICIES = ("auto", "model", "nearest")
