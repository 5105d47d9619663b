"""Stage 3: the Feast feature repository (definitions only; ``feast -c feature_repo ...`` reads it).

``feast apply`` imports every ``.py`` here except this file, each as a top-level module. Only
``repo.py`` holds Feast objects at module level; the other modules hold the functions that build them
(``entities``, ``sources``, ``views``, ``services``) and the reading of the lake they are built for
(``catalog``), so that ``serving.publish`` builds exactly the same objects without importing a module
twice (a Feast object imported under two module names would be registered twice). Nothing here
reads or writes data: that is ``serving``'s job.
"""
