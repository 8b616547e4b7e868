"""On-disk layouts: one module per layout, each with ``load(manifest, root) -> list[dict]``.

Adding a dataset whose files follow an existing layout needs only a manifest (``.toml``); a new
layout is a new module here plus one entry in :data:`LAYOUTS`.
"""

from data_manifests.layouts import afew, affwild2, hume_reaction, recola

LAYOUTS = {
    "affwild2": affwild2.load,
    "afew": afew.load,
    "hume_reaction": hume_reaction.load,
    "recola": recola.load,
}
