"""The operators' web console, served by the api process at /console (`app.mount`).

Kept apart from the engine: it reads and acts through the same objects as the admin API
(`Store`, `Messages`, `DeadLetters`) and `notifier top`'s table, and ships its templates, one
script and one stylesheet inside the package, so there is nothing to build.
"""
