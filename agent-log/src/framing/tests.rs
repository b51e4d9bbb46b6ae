//! The framer's rules, each on bytes.
