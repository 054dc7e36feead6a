//! site-server
