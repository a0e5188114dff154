//! Wire formats: SRP information units and data buffer descriptors.
//! (Owned by the wire work; this file is a placeholder in the skeleton.)
