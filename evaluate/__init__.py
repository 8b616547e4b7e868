"""Stage three: the report, predictions for a split, and analysis of any video.

Kept light: ``python -m evaluate --help``, ``report`` and ``analyze``'s stage one must not import the
backend before they need it.
"""

# What make predict and make analyze give a frame without a face (evaluate.predict explains each).
NO_FACE_POLICIES = ("auto", "model", "nearest")


def check_no_face(no_face: str) -> str:
    """``no_face`` itself; an unknown policy is a ValueError listing the valid ones."""
    if no_face not in NO_FACE_POLICIES:
        raise ValueError(f"unknown --no-face policy '{no_face}'; choose one of: {', '.join(NO_FACE_POLICIES)}")
    return no_face


def no_face_policy(no_face: str, context: bool) -> str:
    """``auto`` resolved for a model: ``model`` where it has temporal context, else ``nearest``."""
    if check_no_face(no_face) != "auto":
        return no_face
    return "model" if context else "nearest"
