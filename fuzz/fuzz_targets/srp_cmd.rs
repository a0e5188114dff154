//! SRP_CMD parsing on arbitrary bytes (opcode forced to SRP_CMD so the
//! fuzzer spends its time in the descriptor code): whatever parses must
//! re-emit to the same bytes and its descriptor views must be usable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use srptd::wire::{Cmd, DataDesc, DirectDesc, Opcode};

fuzz_target!(|input: &[u8]| {
    // First two bytes: an immediate data offset to try; the rest: the IU.
    let Some((off, rest)) = input.split_first_chunk::<2>() else {
        return;
    };
    let imm_data_offset = usize::from(u16::from_be_bytes(*off));
    let mut iu = rest.to_vec();
    if let Some(op) = iu.first_mut() {
        *op = Opcode::CMD.0;
    }
    let Ok(cmd) = Cmd::parse(&iu) else { return };

    let n = cmd.emitted_len();
    assert!(n <= iu.len());
    let mut out = vec![0u8; n];
    assert_eq!(cmd.emit(&mut out), Ok(n));
    assert_eq!(Cmd::parse(&out), Ok(cmd));

    for d in [cmd.data_out, cmd.data_in] {
        match d {
            DataDesc::Indirect(ind) => {
                assert!(ind.in_iu_count() <= ind.total_count());
                assert_eq!(ind.iter().count(), ind.in_iu_count());
                let _ = ind.is_complete_in_iu();
                let _ = DirectDesc::parse_table(ind.partial).map(|t| t.count());
            }
            DataDesc::Immediate(imm) => {
                if let Ok(data) = imm.data(&iu, imm_data_offset) {
                    assert_eq!(data.len(), imm.len as usize);
                    assert!(imm.desc_end <= imm_data_offset);
                }
            }
            DataDesc::Direct(_) | DataDesc::None => {}
        }
    }
});
