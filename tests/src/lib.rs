//! Support code for the workspace integration tests in `tests/tests/`.
