"""What every stage shares: registries, tasks, scores, the run folder and the config-to-CLI mechanism.

It sits below ``train``, ``finetune`` and ``evaluate`` (they import it; it imports none of them)
and above ``data_manifests`` (whose label layouts the tasks use).
"""
