//! The seed corpora of the fuzz targets (`fuzz/seeds/<target>/`), built
//! from what the Linux initiator (ib_srp) really sends: SRP_LOGIN_REQ with
//! it_iu_len 8260 and immediate data offset 68, SRP_CMD with direct,
//! indirect, external-table and immediate descriptors as the simulated
//! initiator builds them, SRP_TSK_MGMT, SRP_I_LOGOUT, SRP_CRED_RSP, DevMgt
//! Gets. This test checks the committed files are what the generator makes;
//! `SRPTD_WRITE_SEEDS=1 cargo test --test fuzz_seeds` rewrites them.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use srptd::wire::mad::{AttributeId, DmMad, Method};
use srptd::wire::{AerRsp, CredRsp, ILogout, LoginRequest, Tag, TaskMgmt, TmFunction};

type Seeds = BTreeMap<String, Vec<u8>>;

fn login_req() -> Vec<u8> {
    let mut b = vec![0u8; LoginRequest::LEN];
    linux_login(8260).emit(&mut b).unwrap();
    b
}

fn login_req_cm() -> Vec<u8> {
    let mut b = vec![0u8; LoginRequest::RDMA_CM_LEN];
    linux_login(8260).emit_rdma_cm(&mut b).unwrap();
    b
}

/// SRP_CMDs as ib_srp builds them, by name.
fn commands() -> Vec<(&'static str, Vec<u8>)> {
    let t = target_with("ram:1M,bs=512");
    let mut sim = Sim::login(&t, |_| {});
    let data = pattern(4096, 1);
    let mut v = Vec::new();
    for (name, layout) in [
        ("direct", Layout::Direct),
        ("indirect3", Layout::Indirect(3)),
        ("external4", Layout::External { n: 4, in_iu: 1 }),
        ("immediate", Layout::Immediate),
    ] {
        let tag = sim.new_tag();
        v.push((
            name,
            sim.build_cmd(tag, 0, &rw16(0x8a, 8, 8), Some(&data), 0, layout),
        ));
        if layout != Layout::Immediate {
            let tag = sim.new_tag();
            let name = match name {
                "direct" => "read_direct",
                "indirect3" => "read_indirect3",
                _ => "read_external4",
            };
            v.push((name, sim.build_cmd(tag, 0, &rw10(0x28, 8, 8), None, 4096, layout)));
        }
    }
    v
}

fn small_ius() -> Vec<(&'static str, Vec<u8>)> {
    let mut tmf = vec![0u8; 48];
    TaskMgmt {
        tag: Tag(0x8000_0001),
        sol_not: 0,
        lun: lun_bytes(0),
        function: TmFunction::ABORT_TASK,
        task_tag: Tag(0x1001),
    }
    .emit(&mut tmf)
    .unwrap();
    let mut lun_reset = vec![0u8; 48];
    TaskMgmt {
        tag: Tag(0x8000_0002),
        sol_not: 0,
        lun: lun_bytes(0),
        function: TmFunction::LUN_RESET,
        task_tag: Tag(0),
    }
    .emit(&mut lun_reset)
    .unwrap();
    let mut logout = vec![0u8; 16];
    ILogout { tag: Tag(7) }.emit(&mut logout).unwrap();
    let mut cred = vec![0u8; 16];
    CredRsp { tag: Tag(9) }.emit(&mut cred).unwrap();
    let mut aer = vec![0u8; 16];
    AerRsp { tag: Tag(10) }.emit(&mut aer).unwrap();
    vec![
        ("tsk_mgmt_abort", tmf),
        ("tsk_mgmt_lun_reset", lun_reset),
        ("i_logout", logout),
        ("cred_rsp", cred),
        ("aer_rsp", aer),
    ]
}

/// channel_sim operation bytes (tests/common/chaos.rs decodes them).
mod op {
    pub const WRITE: u8 = 0;
    pub const READ: u8 = 80;
    pub const OTHER: u8 = 160;
    pub const HOLD: u8 = 176;
    pub const RELEASE: u8 = 192;
    pub const MALFORMED: u8 = 216;
    pub const TMF: u8 = 228;
    pub const ADVANCE: u8 = 238;
    pub const RELEASE_ALL: u8 = 246;
    pub const LIFECYCLE: u8 = 250;
}

fn chaos_seeds(s: &mut Seeds) {
    use op::*;
    // Every layout: write 4 blocks, read them back (calm mode).
    let mut layouts = vec![0x80];
    for (i, l) in [0u8, 2, 3, 4, 5, 6, 0x1b, 0x2d].into_iter().enumerate() {
        let lba = (i as u16 * 16).to_be_bytes();
        layouts.extend([WRITE, 3, lba[0], lba[1], l, READ, 3 | 0x10, lba[0], lba[1], l]);
    }
    s.insert("channel_sim/layouts".into(), layouts);
    // Held executions, ABORT TASK, release out of order.
    s.insert(
        "channel_sim/held_abort".into(),
        vec![
            0x80,
            OTHER,
            0,
            HOLD,
            WRITE,
            7,
            0,
            32,
            3,
            WRITE,
            7,
            0,
            36,
            4,
            READ,
            7,
            0,
            32,
            0,
            TMF,
            0,
            2,
            RELEASE,
            1,
            RELEASE_ALL,
            READ,
            15,
            0,
            32,
            5,
        ],
    );
    // A shared receive ring, 4 KiB blocks, LUN RESET with commands held.
    s.insert(
        "channel_sim/shared_lun_reset".into(),
        vec![
            0x83,
            WRITE,
            1,
            0,
            9,
            0,
            HOLD,
            READ,
            1,
            0,
            9,
            2,
            WRITE,
            2,
            0,
            40,
            6,
            TMF,
            3,
            0,
            RELEASE,
            0,
            RELEASE_ALL,
            OTHER,
            1,
            3,
            READ,
            1,
            0,
            9,
            4,
        ],
    );
    // Malformed IUs: a mutated write with trailing bytes, a truncated read.
    s.insert(
        "channel_sim/malformed".into(),
        vec![
            0x00, WRITE, 3, 0, 1, 0, MALFORMED, 0x04, 3, 0, 2, 4, 1, 6, 0, 20, 0xaa, MALFORMED, 0x01, 2, 0,
            5, 2, 1, 5, 0, 30, 0, READ, 3, 0, 1, 0,
        ],
    );
    // Logout with a command held, time passing, on a shared ring whose
    // receives never flush.
    s.insert(
        "channel_sim/logout_held".into(),
        vec![
            0x05, HOLD, WRITE, 3, 0, 8, 5, LIFECYCLE, 0, RELEASE, 0, ADVANCE, 80, ADVANCE, 80,
        ],
    );
    // A failed RDMA READ in the middle of a write; target shutdown.
    s.insert(
        "channel_sim/failed_wr".into(),
        vec![
            0x18, WRITE, 5, 0, 4, 3, LIFECYCLE, 5, 1, WRITE, 5, 0, 4, 4, READ, 5, 0, 4, 2, LIFECYCLE, 2,
        ],
    );
}

/// pr operation bytes (tests/common/pr_model.rs decodes them): the first
/// byte turns PTPL_C on (bit 0); then per step an op byte (kind << 4 |
/// raw list << 2 | nexus) and its arguments.
fn pr_seeds(s: &mut Seeds) {
    const REGISTER: u8 = 0x00;
    const RESERVE: u8 = 0x10;
    const RELEASE: u8 = 0x20;
    const CLEAR: u8 = 0x30;
    const PREEMPT_AND_ABORT: u8 = 0x50;
    const REGISTER_AND_MOVE: u8 = 0x70;
    const PR_IN: u8 = 0x80;
    const RAW: u8 = 0x04;
    // Key selectors: 0 zero, 1 0x11, 2 0x22, 3 | n << 2 nexus n's key.
    let own = |n: u8| 3 | n << 2;
    let mut each_type = vec![0x01];
    each_type.extend([REGISTER, 0, 0, 1, 0x01, REGISTER | 1, 0, 0, 2, 0]);
    for t in [1u8, 3, 5, 6, 7, 8] {
        each_type.extend([RESERVE, t, own(0), 0, 0, PR_IN, 1, PR_IN | 1, 3]);
        each_type.extend([RESERVE | 1, t, own(1), 0, 0, RELEASE, t, own(0), 0, 0]);
    }
    each_type.extend([CLEAR | 1, 0, own(1), 0, 0, PR_IN, 0]);
    s.insert("pr/register_reserve_each_type".into(), each_type);
    s.insert(
        "pr/preempt_and_abort".into(),
        vec![
            0x00,
            REGISTER,
            0,
            0,
            1,
            0,
            REGISTER | 1,
            0,
            0,
            2,
            0,
            RESERVE | 1,
            1,
            own(1),
            0,
            0,
            PREEMPT_AND_ABORT,
            3,
            own(0),
            own(1),
            0,
            PR_IN,
            3,
        ],
    );
    s.insert(
        "pr/spec_i_pt_and_move".into(),
        vec![
            0x01,
            REGISTER,
            0,
            0,
            1,
            0x1d,
            RESERVE,
            1,
            own(0),
            0,
            0,
            REGISTER_AND_MOVE,
            0,
            own(0),
            2,
            0x06,
            PR_IN | 2,
            3,
        ],
    );
    let mut raw = vec![0x00, REGISTER | RAW, 0, 23];
    raw.extend([0u8; 23]);
    raw.extend([RESERVE | RAW, 1, 25]);
    raw.extend([0u8; 25]);
    let mut tid = vec![REGISTER | RAW | 2, 0, 52];
    tid.extend([
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x33, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 24, 0x05,
    ]);
    tid.extend([0u8; 23]);
    raw.extend(tid);
    // SPC-2 RESERVE, RELEASE, nexus loss, LUN reset.
    raw.extend([0x90, 0x91, PR_IN, 0, 0xa1, 0xa0, 0x92, 0xb2, 0x93, 0xc0]);
    s.insert("pr/raw_malformed".into(), raw);
}

/// COMPARE AND WRITE (SBC-3 5.2) of `nlb` blocks at `lba`.
fn caw16(lba: u64, nlb: u8) -> Vec<u8> {
    let mut c = vec![0x89, 0];
    c.extend(lba.to_be_bytes());
    c.extend([0, 0, 0, nlb, 0, 0]);
    c
}

fn generate() -> Seeds {
    let mut s = Seeds::new();
    let cmds = commands();
    let small = small_ius();
    // srp_iu: every IU as sent.
    s.insert("srp_iu/login_req".into(), login_req());
    s.insert("srp_iu/login_req_rdma_cm".into(), login_req_cm());
    for (n, iu) in cmds.iter().chain(&small) {
        s.insert(format!("srp_iu/{n}"), iu.clone());
    }
    // srp_cmd: the immediate data offset (68) then the IU.
    for (n, iu) in &cmds {
        let mut b = 68u16.to_be_bytes().to_vec();
        b.extend_from_slice(iu);
        s.insert(format!("srp_cmd/{n}"), b);
    }
    // channel: IUs each preceded by a length byte (at most 255 bytes).
    let mut seq = Vec::new();
    for (_, iu) in cmds.iter().filter(|(_, iu)| iu.len() < 256).chain(&small) {
        seq.push(iu.len() as u8);
        seq.extend_from_slice(iu);
    }
    s.insert("channel/linux_sequence".into(), seq);
    // login: 12 control bytes (limits: defaults-like, allowed, accept the
    // channel check) then the request.
    let ctl = [0, 1, 0, 68, 48, 127, 0x0f, 1, 8, 0, 0, 0];
    for (n, iu, flags) in [
        ("ib_srp", login_req(), 8u8),
        ("ib_srp_rdma_cm", login_req_cm(), 9),
    ] {
        let mut b = ctl.to_vec();
        b[8] = flags;
        b.extend_from_slice(&iu);
        s.insert(format!("login/{n}"), b);
    }
    // scsi_cdb: LUN byte then a CDB.
    for (n, cdb) in [
        ("inquiry", vec![0x12, 0, 0, 0, 96, 0]),
        ("inquiry_vpd_b0", vec![0x12, 1, 0xb0, 0, 64, 0]),
        (
            "read_capacity16",
            vec![0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0],
        ),
        ("mode_sense10", vec![0x5a, 0, 0x3f, 0, 0, 0, 0, 0x10, 0, 0]),
        ("report_luns", vec![0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]),
        ("read16", rw16(0x88, 8, 8).to_vec()),
        ("compare_and_write", caw16(8, 1)),
        (
            "report_target_port_groups",
            vec![0xa3, 0x2a, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0],
        ),
        ("inquiry_vpd_83", vec![0x12, 1, 0x83, 0, 255, 0]),
    ] {
        let mut b = vec![0];
        b.extend(cdb);
        s.insert(format!("scsi_cdb/{n}"), b);
    }
    // scsi_params: LUN selector (bit 7: keep the opcode byte as is), CDB
    // length selector, the CDB, then data-out / the parameter list.
    let mut unmap_list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    unmap_list.extend([0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 8, 0, 0, 0, 0]);
    let mut ws = vec![0x93, 0];
    ws.extend(40u64.to_be_bytes());
    ws.extend([0, 0, 0, 4, 0, 0]);
    let mut verify = vec![0x8f, 0x02];
    verify.extend(8u64.to_be_bytes());
    verify.extend([0, 0, 0, 1, 0, 0]);
    let mode_caching = vec![
        0, 0x12, 0, 0, 0, 0, 0, 0, 0x08, 0x12, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    for (n, lun, cdb, params) in [
        ("write10_lun0", 0u8, rw10(0x2a, 8, 2).to_vec(), pattern(64, 2)),
        ("read16_lun0", 0, rw16(0x88, 8, 2).to_vec(), vec![]),
        (
            "unmap_lun0",
            0,
            vec![0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0],
            unmap_list,
        ),
        ("write_same16_lun0", 0, ws, pattern(512, 3)),
        ("verify16_bytchk", 0, verify, vec![0]),
        (
            "mode_select10_caching",
            0,
            vec![0x55, 0x10, 0, 0, 0, 0, 0, 0, 20, 0],
            mode_caching,
        ),
        ("write16_ro", 2, rw16(0x8a, 0, 1).to_vec(), pattern(16, 4)),
        (
            "read16_beyond_2_32",
            3,
            rw16(0x88, (1 << 32) + 5, 1).to_vec(),
            vec![],
        ),
        ("write16_4k", 1, rw16(0x8a, 3, 1).to_vec(), pattern(16, 5)),
        // Verify data zeros (what an untouched LUN holds), write data a
        // pattern. The target takes the LUN as the selector byte modulo 6:
        // 4 | 0x80 is LUN 0 (RAM, 512), 0x80 LUN 4 (file, 4096).
        (
            "compare_and_write_lun0",
            4,
            caw16(40, 1),
            [vec![0; 512], pattern(512, 6)].concat(),
        ),
        (
            "compare_and_write_file4k",
            0,
            caw16(2, 1),
            [vec![0; 4096], pattern(4096, 7)].concat(),
        ),
        // EXTENDED COPY lists the target builds from the parameter bytes
        // (the first one odd): LIST ID USAGE, CSCD count - 1, each CSCD's
        // LUN (0, 1, 2, 4), segment count, then per segment the CSCD IDs,
        // DC/CAT, NUMBER OF BLOCKS (2 bytes), the LBAs (8 bytes each);
        // last how many bytes to flip (none).
        (
            "xcopy_lun0_to_lun1_4k",
            4,
            xcopy_cdb(),
            xcopy_seed(&[2, 1, 0, 1, 1], &[(0, 1, 16, 8, 4)]),
        ),
        (
            "xcopy_within_lun0",
            4,
            xcopy_cdb(),
            xcopy_seed(&[0, 5, 0, 0, 2], &[(0, 0, 32, 0, 16), (0, 0, 8, 100, 90)]),
        ),
    ] {
        let mut b = vec![lun | 0x80, (cdb.len() - 6) as u8];
        b.extend(cdb);
        b.extend(params);
        s.insert(format!("scsi_params/{n}"), b);
    }
    // mad: the Gets an initiator's srp_daemon sends.
    for (n, attr, m) in [
        ("class_port_info", AttributeId::CLASS_PORT_INFO, 0),
        ("io_unit_info", AttributeId::IO_UNIT_INFO, 0),
        ("ioc_profile_1", AttributeId::IO_CONTROLLER_PROFILE, 1),
        ("service_entries_1_0_0", AttributeId::SERVICE_ENTRIES, 1 << 16),
    ] {
        s.insert(
            format!("mad/{n}"),
            DmMad::request(Method::GET, 0x1234_5678, attr, m)
                .to_bytes()
                .to_vec(),
        );
    }
    chaos_seeds(&mut s);
    pr_seeds(&mut s);
    s
}

#[test]
fn seeds_are_generated() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    let seeds = generate();
    if std::env::var_os("SRPTD_WRITE_SEEDS").is_some() {
        let _ = std::fs::remove_dir_all(&root);
        for (name, bytes) in &seeds {
            let p = root.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        let on_disk = std::fs::read(root.join(name))
            .unwrap_or_else(|e| panic!("fuzz/seeds/{name}: {e} (SRPTD_WRITE_SEEDS=1 regenerates)"));
        assert!(
            on_disk == *bytes,
            "fuzz/seeds/{name} is stale (SRPTD_WRITE_SEEDS=1 regenerates)"
        );
    }
}

/// The channel_sim seeds run clean through the harness (and so through
/// `cargo test`, not only under the fuzzer).
#[test]
fn chaos_seeds_pass() {
    let mut s = Seeds::new();
    chaos_seeds(&mut s);
    for bytes in s.values() {
        common::chaos::run(bytes);
    }
}

/// The pr seeds run clean through the harness.
#[test]
fn pr_seeds_pass() {
    let mut s = Seeds::new();
    pr_seeds(&mut s);
    for bytes in s.values() {
        common::pr_model::run(bytes);
    }
}

/// A 6-byte CDB that the target replaces by EXTENDED COPY's.
fn xcopy_cdb() -> Vec<u8> {
    vec![0x83, 0, 0, 0, 0, 0]
}

/// The parameter bytes from which scsi_params builds an EXTENDED COPY
/// list: `head` (LIST ID USAGE and identifier, CSCDs, segment count), then
/// segments (source and destination CSCD ID, blocks, LBAs).
fn xcopy_seed(head: &[u8], segments: &[(u8, u8, u16, u64, u64)]) -> Vec<u8> {
    let mut b = vec![1];
    b.extend(head);
    for &(src, dst, blocks, src_lba, dst_lba) in segments {
        b.extend([src, dst, 0]);
        b.extend(blocks.to_be_bytes());
        b.extend(src_lba.to_be_bytes());
        b.extend(dst_lba.to_be_bytes());
    }
    b.push(0);
    b
}
