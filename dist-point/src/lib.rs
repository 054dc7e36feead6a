//! dist-point
