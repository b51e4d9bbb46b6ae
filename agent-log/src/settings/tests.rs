//! Tests of the log agent's settings.
