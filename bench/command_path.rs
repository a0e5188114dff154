//! Per-command cost of the sans-I/O path: SRP_CMD parse, CDB plan,
//! descriptor mapping to work requests, SCSI execution where needed, and the
//! SRP_RSP build, in ns per command. The "hardware" completes every work
//! request at once without moving data, so only srptd's own work is timed.
//!
//! Group `command_path` times the whole path through a `Channel`; group
//! `stage` times its pieces alone (wire parse of the IU, parse of an
//! indirect descriptor table, SCSI plan (dispatch) of a CDB, SCSI execution
//! of an emulated command, SRP_RSP emit), so a regression can be located.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use srptd::mem::DmaBuf;
use srptd::proto::{Action, Channel, ChannelConfig, ChannelMemory, WrId};
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Target, TargetConfig};
use srptd::wire::{Cmd, DataDesc, DirectDesc, IndirectDesc, Rsp, Tag};

struct Bench {
    ch: Channel,
    posted: VecDeque<u32>,
    iu_len: u32,
}

impl Bench {
    fn new(iu: &[u8]) -> Bench {
        let bs = BackstoreConfig::parse("ram:64M,bs=512", "lun").unwrap();
        let target = Target::new(TargetConfig {
            luns: vec![LunConfig::new(0, bs)],
            ..TargetConfig::default()
        })
        .unwrap();
        let nexus = target.nexus([0x11; 16]);
        let cfg = ChannelConfig::new(8260, Some(68), 32);
        let mem = ChannelMemory::with(&cfg.memory_layout(), DmaBuf::new).unwrap();
        let ch = Channel::new(cfg, nexus, mem).unwrap();
        // Every receive slot holds the same IU: a reposted slot keeps it.
        for slot in 0..ch.config().recv_slots() {
            let (off, _) = ch.recv_slot(slot);
            ch.recv_buf().write(off as usize, iu);
        }
        let mut b = Bench {
            ch,
            posted: VecDeque::new(),
            iu_len: iu.len() as u32,
        };
        b.drain();
        // Clear the power-on unit attention.
        b.one();
        b
    }

    fn drain(&mut self) {
        loop {
            let mut completions: [(u64, bool); 8] = [(0, false); 8];
            let mut n = 0;
            let mut any = false;
            while let Some(a) = self.ch.poll_action() {
                any = true;
                match a {
                    Action::PostRecv { slot } => self.posted.push_back(slot),
                    Action::PostSend(wr) if wr.signaled => {
                        completions[n] = (wr.wr_id, true);
                        n += 1;
                        if n == completions.len() {
                            break;
                        }
                    }
                    Action::PostSend(_) => {}
                    Action::Execute { cmd } => {
                        let done = {
                            let r = self.ch.exec_request(cmd).unwrap();
                            r.nexus.run(r.command, r.buf, r.offset, r.len)
                        };
                        self.ch.handle_exec_done(cmd, done);
                    }
                    Action::Disconnect | Action::Closed => panic!("unexpected {a:?}"),
                }
            }
            for &(id, ok) in &completions[..n] {
                self.ch.handle_completion(id, ok, 0);
            }
            if !any && n == 0 {
                break;
            }
        }
    }

    fn one(&mut self) {
        let slot = self.posted.pop_front().expect("a posted receive");
        self.ch.handle_completion(WrId::recv(slot), true, self.iu_len);
        self.drain();
    }
}

fn cmd_iu(cdb: &[u8], out: bool, desc: DataDesc<'_>) -> Vec<u8> {
    let mut iu = vec![0u8; 4096];
    let mut c = Cmd::new(Tag(42), [0; 8], cdb);
    c = if out {
        c.with_data_out(desc)
    } else {
        c.with_data_in(desc)
    };
    let n = c.emit(&mut iu).unwrap();
    iu.truncate(n);
    iu
}

fn rw16(op: u8, lba: u64, blocks: u32) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = op;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

fn command_path(c: &mut Criterion) {
    let direct = DataDesc::Direct(DirectDesc {
        va: 0x1000,
        rkey: 1,
        len: 4096,
    });
    let mut table = [0u8; 16 * 8];
    for i in 0..8 {
        DirectDesc {
            va: 0x10000 * i as u64,
            rkey: 1,
            len: 512,
        }
        .emit(&mut table[i * 16..])
        .unwrap();
    }
    let indirect = DataDesc::Indirect(IndirectDesc {
        table: DirectDesc {
            va: 0,
            rkey: 0,
            len: table.len() as u32,
        },
        total_len: 4096,
        partial: &table,
    });
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("read_4k_direct", cmd_iu(&rw16(0x88, 8, 8), false, direct)),
        ("write_4k_direct", cmd_iu(&rw16(0x8a, 8, 8), true, direct)),
        ("read_4k_indirect8", cmd_iu(&rw16(0x88, 8, 8), false, indirect)),
        (
            "inquiry",
            cmd_iu(
                &[0x12, 0, 0, 0, 96, 0],
                false,
                DataDesc::Direct(DirectDesc {
                    va: 0x1000,
                    rkey: 1,
                    len: 96,
                }),
            ),
        ),
        ("test_unit_ready", cmd_iu(&[0u8; 6], false, DataDesc::None)),
    ];
    let mut g = c.benchmark_group("command_path");
    g.throughput(Throughput::Elements(1));
    for (name, iu) in cases {
        let mut b = Bench::new(&iu);
        g.bench_function(name, |bench| bench.iter(|| black_box(&mut b).one()));
    }
    g.finish();
}

fn wire_parse(c: &mut Criterion) {
    let iu = cmd_iu(
        &rw16(0x88, 8, 8),
        false,
        DataDesc::Direct(DirectDesc {
            va: 0x1000,
            rkey: 1,
            len: 4096,
        }),
    );
    c.bench_function("srp_cmd_parse", |b| {
        b.iter(|| Cmd::parse(black_box(&iu)).unwrap().tag)
    });
}

/// The stages of the path, each alone.
fn stages(c: &mut Criterion) {
    let bs = BackstoreConfig::parse("ram:64M,bs=512", "lun").unwrap();
    let target = Target::new(TargetConfig {
        luns: vec![LunConfig::new(0, bs)],
        ..TargetConfig::default()
    })
    .unwrap();
    let nexus = target.nexus([0x11; 16]);
    let lun = [0u8; 8];
    let read16 = rw16(0x88, 8, 8);
    // The first command after login reports the power-on unit attention.
    let mut tries = 0;
    while nexus.plan(lun, &read16).is_err() {
        tries += 1;
        assert!(tries < 4, "READ(16) never plans without a unit attention");
    }

    let mut table = [0u8; 16 * 8];
    for i in 0..8 {
        DirectDesc {
            va: 0x10000 * i as u64,
            rkey: 1,
            len: 512,
        }
        .emit(&mut table[i * 16..])
        .unwrap();
    }
    let inquiry = [0x12, 0, 0, 0, 96, 0];
    let buf = DmaBuf::new(4096).unwrap();
    let sense = [0x70u8, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x24, 0, 0, 0, 0, 0];
    let mut rsp = [0u8; 256];

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(1));
    g.bench_function("indirect_table_parse8", |b| {
        b.iter(|| {
            DirectDesc::parse_table(black_box(&table))
                .unwrap()
                .map(|d| u64::from(d.len))
                .sum::<u64>()
        })
    });
    g.bench_function("scsi_plan_read16", |b| {
        b.iter(|| nexus.plan(black_box(lun), black_box(&read16)).unwrap().len)
    });
    g.bench_function("scsi_execute_inquiry", |b| {
        b.iter(|| nexus.execute(black_box(lun), black_box(&inquiry), &buf, 0, 96))
    });
    g.bench_function("rsp_emit_good", |b| {
        b.iter(|| {
            Rsp::scsi(Tag(42), black_box(1), 0, &[])
                .emit(black_box(&mut rsp))
                .unwrap()
        })
    });
    g.bench_function("rsp_emit_sense", |b| {
        b.iter(|| {
            Rsp::scsi(Tag(42), black_box(1), 2, black_box(&sense))
                .emit(black_box(&mut rsp))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, command_path, wire_parse, stages);
criterion_main!(benches);
