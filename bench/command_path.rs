//! Per-command cost of the sans-I/O path: SRP_CMD parse, CDB plan,
//! descriptor mapping to work requests, SCSI execution where needed, and the
//! SRP_RSP build, in ns per command. The "hardware" completes every work
//! request at once without moving data, so only srptd's own work is timed.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use srptd::proto::{Action, Channel, ChannelConfig, WrId};
use srptd::scsi::backstore::BackstoreConfig;
use srptd::scsi::lun::{LunConfig, Target, TargetConfig};
use srptd::wire::{Cmd, DataDesc, DirectDesc, IndirectDesc, Tag};

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
        let ch = Channel::new(cfg, nexus).unwrap();
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
                            r.nexus.execute(r.lun, r.cdb, r.buf, r.offset, r.len)
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

criterion_group!(benches, command_path, wire_parse);
criterion_main!(benches);
