//! Tests of the tailer.
