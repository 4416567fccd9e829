"""The conformance suite's parts: shared fixtures and one test group per module.

:class:`interp_core.testing.conformance.BackendConformance` combines them; subclass that.
"""
