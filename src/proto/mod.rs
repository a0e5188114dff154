//! Sans-I/O SRP channel logic.
//! (Placeholder in the skeleton.)
