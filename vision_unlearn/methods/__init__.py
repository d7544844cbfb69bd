"""Unlearning methods, one file per method (the file name is the registry name).

Use :func:`vision_unlearn.api.create_unlearner` / :func:`vision_unlearn.api.list_unlearners`
rather than importing these modules directly.
"""
