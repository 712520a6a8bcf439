//! (being written by the lead)
