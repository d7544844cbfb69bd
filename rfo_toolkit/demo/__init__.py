"""``vision-unlearn demo``: the main job on the embedded real data, stage by stage
(:mod:`~rfo_toolkit.demo.pipeline`), its data (:mod:`~rfo_toolkit.demo.data`), its models
(:mod:`~rfo_toolkit.demo.models`) and its sub-command (:mod:`~rfo_toolkit.demo.commands`)."""
