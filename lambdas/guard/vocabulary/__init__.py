"""GUARD's words, typed: one StrEnum module each for stages, outcomes and notification events.

Error names live with the error classes in `guard.errors` (`ErrorName`), because the ASL's
Retry/Catch match the class names.
"""
