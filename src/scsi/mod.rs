//! SCSI target core: command emulation, sense data, LUNs, backstores.
//! (Placeholder in the skeleton.)
