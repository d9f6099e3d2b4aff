"""Built-in learning rules, one file each.

Nothing is imported eagerly: the built-ins are found through nni-bio's own ``nni_bio.rules`` entry
points, exactly like third-party plugins.
"""
