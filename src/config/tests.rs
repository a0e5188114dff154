use std::collections::BTreeMap;

use super::*;
use crate::scsi::{BackstoreKind, FileCache, InitiatorPortId};

fn parse(text: &str) -> Result<Loaded, ConfigError> {
    Settings::from_toml(Path::new("t.toml"), text)?.build()
}

fn error(text: &str) -> String {
    match parse(text) {
        Ok(l) => panic!("accepted: {l:?}"),
        Err(e) => e.to_string(),
    }
}

fn id(hex: &str) -> InitiatorPortId {
    parse_hex::<16>(hex).unwrap()
}

const A: &str = "0000000000000001000000fffe007701";
const B: &str = "0000000000000002000000fffe007701";

#[test]
fn sample_config_builds() {
    let text = include_str!("../../contrib/srptd.toml");
    let l = parse(text).unwrap();
    assert_eq!(l.options.port, 5555);
    assert_eq!(l.options.limits.queue_depth, 128);
    assert_eq!(l.target.luns.len(), 1);
    assert_eq!(l.target.access, Access::Any);
    assert_eq!(l.warnings.len(), 1, "{:?}", l.warnings);
    assert!(l.warnings[0].starts_with("t.toml:"), "{}", l.warnings[0]);
}

#[test]
fn every_section_is_read() {
    let l = parse(
        r#"
[target]
name = "lab"
id_ext = "0002:c903:0001:0001"
ioc_guid = "0x0002c90300010002"
port = 6000
devices = ["rxe0", "mlx5_0"]
device_management = false
state_dir = "/srv/srptd-state"
[limits]
queue_depth = 64
max_it_iu_len = 8260
immediate_data = false
max_transfer = "512K"
pool_size = "16M"
max_channel_memory = "1G"
[admin]
socket = "/run/x/admin.sock"
[data_path]
pollers = 3
poller_cpus = "none"
io_threads = 2
io_uring = false
spin_us = 0
poller_nice = -5
software_read_depth = 0
software_one_poller = true
srq = true
srq_size = 1024
[[lun]]
number = 3
backstore = "file:/srv/a.img"
read_only = true
block_size = 4096
serial = "disk-a"
[[acl]]
initiator = "0000000000000001000000fffe007701"
"#,
    )
    .unwrap();
    let o = &l.options;
    assert_eq!(
        o.identity,
        Some(TargetPortId {
            id_ext: 0x0002_c903_0001_0001,
            ioc_guid: 0x0002_c903_0001_0002
        })
    );
    assert_eq!((o.port, o.dm, o.srq, o.srq_size), (6000, false, true, Some(1024)));
    assert_eq!(o.devices, ["rxe0", "mlx5_0"]);
    assert_eq!(
        (
            o.limits.queue_depth,
            o.limits.max_it_iu_len,
            o.limits.immediate_data
        ),
        (64, 8260, false)
    );
    assert_eq!((o.pool_size, o.channel_memory), (16 << 20, Some(1 << 30)));
    assert_eq!(
        (o.pollers, o.io_threads, o.spin, o.poller_nice),
        (3, 2, Duration::ZERO, -5)
    );
    assert_eq!(o.poller_cpus, PollerCpus::Unbound);
    assert!(!o.io_uring);
    assert_eq!(
        o.software,
        crate::driver::SoftwareDevice {
            read_depth: 0,
            one_poller: true
        }
    );
    assert_eq!(
        o.admin_socket,
        Some(AdminSocket {
            path: "/run/x/admin.sock".into(),
            explicit: true
        })
    );
    let t = &l.target;
    assert_eq!((t.name.as_str(), t.max_transfer_bytes), ("lab", 512 << 10));
    assert_eq!(t.state_dir.as_deref(), Some(Path::new("/srv/srptd-state")));
    let lun = &t.luns[0];
    assert_eq!(
        (lun.lun, lun.backstore.block_size, lun.backstore.read_only),
        (3, 4096, true)
    );
    assert_eq!(lun.serial.as_deref(), Some("disk-a"));
    assert_eq!(t.access, Access::Only([id(A)].into()));
    assert!(l.warnings.is_empty());
}

#[test]
fn no_file_means_the_quick_start_defaults() {
    let l = load(None, &Flags::default()).unwrap();
    assert_eq!(l.target.access, Access::Any);
    assert_eq!(l.target.luns.len(), 1);
    assert_eq!(
        l.target.luns[0].backstore.kind,
        BackstoreKind::Ram { size: 256 << 20 }
    );
    assert_eq!(l.options.identity, None);
    assert_eq!(l.options.admin_socket, Some(AdminSocket::default()));
    assert_eq!(l.options.poller_cpus, PollerCpus::Auto);
    assert_eq!(l.options.poller_nice, crate::driver::DEFAULT_POLLER_NICE);
    assert_eq!(
        l.options.software,
        crate::driver::SoftwareDevice {
            read_depth: crate::driver::SOFTWARE_READ_DEPTH,
            one_poller: false
        }
    );
    assert!(l.warnings.is_empty());
    let l = load(
        None,
        &Flags {
            admin_socket: Some("none".into()),
            ..Flags::default()
        },
    )
    .unwrap();
    assert_eq!(l.options.admin_socket, None);
    let l = load(
        None,
        &Flags {
            state_dir: Some("none".into()),
            ..Flags::default()
        },
    )
    .unwrap();
    assert_eq!(l.target.state_dir, None);
    let l = load(None, &Flags::default()).unwrap();
    assert_eq!(l.target.state_dir.as_deref(), Some(Path::new(DEFAULT_STATE_DIR)));
}

#[test]
fn a_file_without_acl_lets_nobody_in() {
    let l = parse("[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n").unwrap();
    assert_eq!(l.target.access, Access::Only(HashSet::new()));
    assert!(
        l.warnings[0].contains("no initiator may log in"),
        "{:?}",
        l.warnings
    );
}

#[test]
fn acls_map_luns_per_initiator() {
    let l = parse(&format!(
        r#"
[[lun]]
number = 0
backstore = "ram:1M"
[[lun]]
number = 1
backstore = "ram:1M"
[[acl]]
initiator = "{A}"
luns = [1]
[[acl]]
initiator = "{B}"
"#
    ))
    .unwrap();
    assert_eq!(l.target.access, Access::Only([id(A), id(B)].into()));
    let by_lun: BTreeMap<u16, Option<Access>> =
        l.target.luns.iter().map(|l| (l.lun, l.access.clone())).collect();
    assert_eq!(by_lun[&0], Some(Access::Only([id(B)].into())));
    assert_eq!(by_lun[&1], Some(Access::Only([id(A), id(B)].into())));
}

#[test]
fn flags_override_the_file() {
    let mut s = Settings::from_toml(
        Path::new("t.toml"),
        "[limits]\nqueue_depth = 64\n[data_path]\nsoftware_read_depth = 2\n[[lun]]\nnumber = 5\nbackstore = \"ram:1M\"\n[[acl]]\ninitiator = \"ANY\"\n",
    )
    .unwrap();
    assert_eq!(s.software_read_depth.value, 2);
    let cpu = crate::os::allowed_cpus().unwrap()[0];
    s.apply(&Flags {
        poller_cpus: Some(cpu.to_string()),
        queue_depth: Some(32),
        luns: vec!["ram:2M".into(), "ram:4M".into()],
        allow: vec![A.into()],
        software_read_depth: Some(3),
        software_one_poller: true,
        poller_nice: Some(7),
        ..Flags::default()
    });
    let l = s.build().unwrap();
    assert_eq!(l.options.limits.queue_depth, 32);
    assert_eq!(l.options.poller_nice, 7);
    assert_eq!(l.options.poller_cpus, PollerCpus::List(vec![cpu]));
    assert_eq!(
        l.options.software,
        crate::driver::SoftwareDevice {
            read_depth: 3,
            one_poller: true
        }
    );
    let numbers: Vec<u16> = l.target.luns.iter().map(|l| l.lun).collect();
    assert_eq!(numbers, [0, 1]);
    assert_eq!(l.target.access, Access::Only([id(A)].into()));
}

#[test]
fn flag_errors_name_the_flag() {
    let e = load(
        None,
        &Flags {
            max_transfer: Some("3K".into()),
            ..Flags::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--max-transfer 3K: must be a multiple of 4K between 4K and 64M"
    );
    let e = load(
        None,
        &Flags {
            poller_nice: Some(-21),
            ..Flags::default()
        },
    )
    .unwrap_err();
    assert_eq!(e.to_string(), "--poller-nice -21: must be between -20 and 19");
    let e = load(
        None,
        &Flags {
            allow: vec!["nobody".into()],
            ..Flags::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "--allow \"nobody\": expected ANY or a 32-hex-digit initiator port ID"
    );
}

/// Every bad value is refused with the file, the line and the key.
#[test]
fn file_errors_name_file_line_and_key() {
    let lun = "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n";
    let cases: &[(&str, &str)] = &[
        ("[limits]\nqueue_depth = 0\n", "t.toml:2: limits.queue_depth = 0: must be between 1 and 4096"),
        ("[limits]\n\nmax_it_iu_len = 10\n", "t.toml:3: limits.max_it_iu_len = 10: must be between 64 and 1048576"),
        ("[limits]\nmax_transfer = \"1X\"\n", "t.toml:2: limits.max_transfer = 1X: not a size (e.g. 512K, 1M, 2G)"),
        (
            "[limits]\nmax_transfer = \"1M\"\npool_size = \"512K\"\n",
            "t.toml:3: limits.pool_size = 512K: must be at least the largest transfer (max_transfer) and at most 4G",
        ),
        (
            "[limits]\nmax_channel_memory = \"1M\"\n",
            "t.toml:2: limits.max_channel_memory = 1M: must be at least one channel's pool (pool_size)",
        ),
        ("[data_path]\npollers = 0\n", "t.toml:2: data_path.pollers = 0: must be between 1 and 64"),
        ("[data_path]\nio_threads = 300\n", "t.toml:2: data_path.io_threads = 300: must be between 1 and 256"),
        ("[data_path]\npoller_nice = 20\n", "t.toml:2: data_path.poller_nice = 20: must be between -20 and 19"),
        (
            "[data_path]\npoller_cpus = \"0,x\"\n",
            "t.toml:2: data_path.poller_cpus = 0,x: \"x\" is not a CPU number (expected auto, none or a list like 0,2,4-7)",
        ),
        (
            "[data_path]\npoller_cpus = \"1023\"\n",
            "t.toml:2: data_path.poller_cpus = 1023: CPU 1023 is not one srptd may run on",
        ),
        (
            "[data_path]\nsrq_size = 64\n",
            "t.toml:2: data_path.srq_size = 64: needs the shared receive queue (srq = true / --srq)",
        ),
        (
            "[target]\nid_ext = \"xyz\"\n",
            "t.toml:2: target.id_ext = \"xyz\": expected 16 hex digits (e.g. 0002c90300010001)",
        ),
        ("[target]\nstate_dir = \"var/x\"\n", "t.toml:2: target.state_dir = \"var/x\": must be an absolute path, or \"none\""),
        ("[admin]\nsocket = \"rel.sock\"\n", "t.toml:2: admin.socket = \"rel.sock\": must be an absolute path, or \"none\""),
        ("[[lun]]\nnumber = 16384\nbackstore = \"ram:1M\"\n", "t.toml:2: lun.number = 16384: LUN numbers go from 0 to 16383"),
        (
            "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n",
            "t.toml:5: lun.number = 0: this LUN number is already used",
        ),
        ("[[lun]]\nnumber = 0\nbackstore = \"disk:1M\"\n", "t.toml:3: lun.backstore = \"disk:1M\":"),
        (
            "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\nblock_size = 1024\n",
            "t.toml:4: lun.block_size = 1024: must be 512 or 4096",
        ),
        (
            "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\nserial = \"a b\"\n",
            "t.toml:4: lun.serial = \"a b\": must be 1 to 64 printable ASCII characters without spaces",
        ),
        (
            "[[acl]]\ninitiator = \"12\"\n",
            "t.toml:2: acl.initiator = \"12\": expected ANY or a 32-hex-digit initiator port ID",
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(got.starts_with(want), "for {text:?}\n got: {got}\nwant: {want}");
    }
    // ACL cases need a LUN.
    let acl_cases: &[(String, &str)] = &[
        (
            format!("{lun}[[acl]]\ninitiator = \"{A}\"\nluns = [7]\n"),
            "t.toml:6: acl.luns = 7: no such LUN",
        ),
        (
            format!("{lun}[[acl]]\ninitiator = \"{A}\"\n[[acl]]\ninitiator = \"{A}\"\n"),
            "t.toml:7: acl.initiator = \"0000000000000001000000fffe007701\": this initiator has another ACL already",
        ),
        (
            format!("{lun}[[acl]]\ninitiator = \"ANY\"\nluns = [0]\n"),
            "t.toml:6: acl.luns = [0]: the ANY ACL maps every LUN",
        ),
    ];
    for (text, want) in acl_cases {
        let got = error(text);
        assert!(got.starts_with(want), "for {text:?}\n got: {got}\nwant: {want}");
    }
}

#[test]
fn syntax_and_type_errors_give_the_line() {
    let got = error("[limits]\nqueue_depth = \"many\"\n");
    assert!(got.starts_with("t.toml:2: "), "{got}");
    assert!(got.contains("queue_depth = \"many\""), "{got}");
    let got = error("[limits]\nqueue_deep = 3\n");
    assert!(got.starts_with("t.toml:2: unknown field `queue_deep`"), "{got}");
    let got = error("[target\n");
    assert!(got.starts_with("t.toml:1: "), "{got}");
    let got = error("[[lun]]\nnumber = 1\n");
    assert!(got.contains("missing field `backstore`"), "{got}");
    // A missing field: the line of its table's header.
    let got = error("[target]\nport = 1\n\n[[lun]]\nnumber = 1\n\n[[acl]]\ninitiator = \"ANY\"\n");
    assert_eq!(got, "t.toml:4: missing field `backstore` (`[[lun]]`)");
    let got = error("[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n[[acl]]\nluns = [0]\n");
    assert_eq!(got, "t.toml:4: missing field `initiator` (`[[acl]]`)");
}

#[test]
fn identity_and_device_errors_name_file_line_and_key() {
    let e = error("[target]\nid_ext = \"0002c90300010001\"\nioc_guid = \"0x12\"\n");
    assert_eq!(
        e,
        "t.toml:3: target.ioc_guid = \"0x12\": expected 16 hex digits (e.g. 0002c90300010001)"
    );
    let s = Settings::from_toml(
        Path::new("t.toml"),
        "[target]\nport = 5555\ndevices = [\"rxe0\", \"mlx5_9\"]\n",
    )
    .unwrap();
    let have = ["rxe0".to_string(), "rxe1".to_string()];
    assert_eq!(
        s.check_devices(&have).unwrap_err().to_string(),
        "t.toml:3: target.devices = \"mlx5_9\": no such RDMA device (available: rxe0, rxe1)"
    );
    let mut s = Settings::default();
    s.apply(&Flags {
        devices: vec!["mlx5_9".into()],
        ..Flags::default()
    });
    assert_eq!(
        s.check_devices(&have).unwrap_err().to_string(),
        "--device \"mlx5_9\": no such RDMA device (available: rxe0, rxe1)"
    );
    assert!(Settings::default().check_devices(&have).is_ok());
}

/// A backstore that does not open when the target is built (at start, or
/// added by a change or a reload) is named by its file line or parameter.
#[test]
fn backstore_errors_name_file_line_and_key() {
    let text = "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n\n[[lun]]\nnumber = 1\nbackstore = \"file:/nonexistent/srptd-x\"\n[[acl]]\ninitiator = \"ANY\"\n";
    let s = Settings::from_toml(Path::new("t.toml"), text).unwrap();
    let e = crate::scsi::Target::new(s.build().unwrap().target).unwrap_err();
    assert_eq!(
        s.target_error(&e).to_string(),
        "t.toml:7: lun.backstore = \"file:/nonexistent/srptd-x\": /nonexistent/srptd-x: no such file or device"
    );
    // A RAM LUN that cannot be allocated, from a flag.
    let mut s = Settings::default();
    s.apply(&Flags {
        luns: vec!["ram:1M".into(), "ram:1000".into()],
        ..Flags::default()
    });
    let e = crate::scsi::Target::new(s.build().unwrap().target).unwrap_err();
    assert_eq!(
        s.target_error(&e).to_string(),
        "--lun \"ram:1000\": size 1000 is not a multiple of the block size 512"
    );
    // Added by an admin call: named by its parameter.
    let l = LiveConfig {
        settings: Settings::from_toml(
            Path::new("t.toml"),
            "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n[[acl]]\ninitiator = \"ANY\"\n",
        )
        .unwrap(),
        path: None,
        flags: Flags::default(),
    };
    let target = crate::scsi::Target::new(l.settings.build().unwrap().target).unwrap();
    let (s, loaded) = l
        .change(&Change::LunAdd {
            number: 3,
            backstore: "file:/nonexistent/srptd-y".into(),
            read_only: None,
            block_size: None,
            serial: None,
            naa: None,
            thin: None,
        })
        .unwrap();
    let e = match target.apply(&loaded.target) {
        Err(crate::scsi::ChangeError::Config(e)) => e,
        r => panic!("{r:?}"),
    };
    assert_eq!(
        s.target_error(&e).to_string(),
        "backstore = \"file:/nonexistent/srptd-y\": /nonexistent/srptd-y: no such file or device"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = Settings::from_file(Path::new("/nonexistent/srptd.toml")).unwrap_err();
    assert!(e.to_string().starts_with("/nonexistent/srptd.toml: "), "{e}");
}

// ------------------------------------------------------------ live changes

fn live(text: &str) -> LiveConfig {
    LiveConfig {
        settings: Settings::from_toml(Path::new("t.toml"), text).unwrap(),
        path: None,
        flags: Flags::default(),
    }
}

const TWO_ACLS: &str = r#"
[[lun]]
number = 0
backstore = "ram:1M"

[[acl]]
initiator = "0000000000000001000000fffe007701"

[[acl]]
initiator = "0000000000000002000000fffe007701"
luns = [0]
read_only = true
"#;

fn change_error(l: &LiveConfig, c: Change) -> String {
    match l.change(&c) {
        Ok((_, loaded)) => panic!("accepted {c:?}: {:?}", loaded.target),
        Err(e) => e.to_string(),
    }
}

#[test]
fn live_changes_build_the_new_target() {
    let mut l = live(TWO_ACLS);
    let (s, loaded) = l
        .change(&Change::LunAdd {
            number: 1,
            backstore: "ram:2M".into(),
            read_only: None,
            block_size: Some(4096),
            serial: Some("disk1".into()),
            naa: None,
            thin: None,
        })
        .unwrap();
    let lun1 = &loaded.target.luns[1];
    assert_eq!((lun1.lun, lun1.backstore.block_size), (1, 4096));
    // A sees every LUN (no list), B only LUN 0, read-only.
    assert_eq!(lun1.access, Some(Access::Only(HashSet::from([id(A)]))));
    assert_eq!(loaded.target.luns[0].read_only_for, HashSet::from([id(B)]));
    l.commit(s);
    let (s, loaded) = l
        .change(&Change::AclMap {
            initiator: B.into(),
            lun: 1,
            mapped_lun: None,
        })
        .unwrap();
    assert_eq!(
        loaded.target.luns[1].access,
        Some(Access::Only(HashSet::from([id(A), id(B)])))
    );
    assert_eq!(loaded.target.luns[1].read_only_for, HashSet::from([id(B)]));
    l.commit(s);
    // Unmapping from an ACL without a list turns it into the others.
    let (s, loaded) = l
        .change(&Change::AclUnmap {
            initiator: A.into(),
            lun: 0,
        })
        .unwrap();
    assert_eq!(
        loaded.target.luns[0].access,
        Some(Access::Only(HashSet::from([id(B)])))
    );
    assert_eq!(s.acls[0].luns.as_ref().unwrap().value, vec![AclLun::same(1)]);
    l.commit(s);
    // Removing a LUN drops it from the lists too.
    let (s, loaded) = l.change(&Change::LunRemove { number: 1 }).unwrap();
    assert_eq!(loaded.target.luns.len(), 1);
    assert_eq!(s.acls[0].luns.as_ref().unwrap().value, Vec::<AclLun>::new());
    let (_, loaded) = l
        .change(&Change::LunReadOnly {
            number: 0,
            read_only: true,
        })
        .unwrap();
    assert!(loaded.target.luns[0].backstore.read_only);
    let (_, loaded) = l
        .change(&Change::AclRemove {
            initiator: B.to_lowercase(),
        })
        .unwrap();
    assert_eq!(loaded.target.access, Access::Only(HashSet::from([id(A)])));
}

#[test]
fn live_change_errors_name_the_parameter() {
    let l = live(TWO_ACLS);
    let add = |number, backstore: &str| Change::LunAdd {
        number,
        backstore: backstore.into(),
        read_only: None,
        block_size: None,
        serial: None,
        naa: None,
        thin: None,
    };
    assert_eq!(
        change_error(&l, add(0, "ram:1M")),
        "number = 0: this LUN number is already used"
    );
    assert!(change_error(&l, add(1, "disk:1M")).starts_with("backstore = \"disk:1M\": "));
    assert_eq!(
        change_error(&l, add(16384, "ram:1M")),
        "number = 16384: LUN numbers go from 0 to 16383"
    );
    let e = change_error(
        &l,
        Change::LunAdd {
            number: 1,
            backstore: "ram:1M".into(),
            read_only: None,
            block_size: Some(1024),
            serial: None,
            naa: None,
            thin: None,
        },
    );
    assert_eq!(e, "block_size = 1024: must be 512 or 4096");
    assert_eq!(
        change_error(&l, Change::LunRemove { number: 5 }),
        "number = 5: no such LUN"
    );
    assert_eq!(
        change_error(
            &l,
            Change::LunReadOnly {
                number: 5,
                read_only: true
            }
        ),
        "number = 5: no such LUN"
    );
    assert_eq!(
        change_error(
            &l,
            Change::AclAdd {
                initiator: A.to_uppercase(),
                luns: None,
                read_only: None,
                address: None,
            }
        ),
        format!(
            "initiator = \"{}\": this initiator has an ACL already",
            A.to_uppercase()
        )
    );
    let e = change_error(
        &l,
        Change::AclAdd {
            initiator: "0000000000000003000000fffe007701".into(),
            luns: Some(vec![9]),
            read_only: None,
            address: None,
        },
    );
    assert_eq!(e, "luns = 9: no such LUN");
    let e = change_error(
        &l,
        Change::AclAdd {
            initiator: "ANY".into(),
            luns: None,
            read_only: Some(true),
            address: None,
        },
    );
    assert!(
        e.starts_with("read_only = true: the ANY ACL cannot be read-only"),
        "{e}"
    );
    assert_eq!(
        change_error(
            &l,
            Change::AclRemove {
                initiator: "0000000000000003000000fffe007701".into()
            }
        ),
        "initiator = \"0000000000000003000000fffe007701\": no ACL for this initiator"
    );
    assert_eq!(
        change_error(
            &l,
            Change::AclMap {
                initiator: B.into(),
                lun: 0,
                mapped_lun: None,
            }
        ),
        "lun = 0: already mapped for this initiator"
    );
    assert_eq!(
        change_error(
            &l,
            Change::AclMap {
                initiator: B.into(),
                lun: 3,
                mapped_lun: None,
            }
        ),
        "lun = 3: no such LUN"
    );
    assert_eq!(
        change_error(
            &l,
            Change::AclUnmap {
                initiator: A.into(),
                lun: 3
            }
        ),
        "lun = 3: no such LUN"
    );
}

#[test]
fn acl_changes_without_a_file_make_access_explicit() {
    // Quick start: everyone may log in until an ACL is managed.
    let l = LiveConfig {
        settings: Settings::default(),
        path: None,
        flags: Flags::default(),
    };
    assert_eq!(l.settings.build().unwrap().target.access, Access::Any);
    let (s, loaded) = l
        .change(&Change::AclAdd {
            initiator: A.into(),
            luns: None,
            read_only: None,
            address: None,
        })
        .unwrap();
    assert_eq!(loaded.target.access, Access::Only(HashSet::from([id(A)])));
    let l = LiveConfig { settings: s, ..l };
    let (_, loaded) = l.change(&Change::AclRemove { initiator: A.into() }).unwrap();
    assert_eq!(
        loaded.target.access,
        Access::Only(HashSet::new()),
        "no ACL: nobody"
    );
}

#[test]
fn save_config_writes_what_reload_reads() {
    let dir = std::env::temp_dir().join(format!("srptd-save-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("srptd.toml");
    std::fs::write(&path, TWO_ACLS).unwrap();
    let flags = Flags {
        queue_depth: Some(64),
        ..Flags::default()
    };
    let mut l = LiveConfig {
        settings: read(Some(&path), &flags).unwrap(),
        path: Some(path.clone()),
        flags,
    };
    let (s, _) = l
        .change(&Change::LunAdd {
            number: 7,
            backstore: "ram:3M".into(),
            read_only: Some(true),
            block_size: None,
            serial: Some("seven".into()),
            naa: None,
            thin: None,
        })
        .unwrap();
    l.commit(s);
    let before = l.settings.build().unwrap();
    assert_eq!(l.save(None).unwrap(), path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("queue_depth = 64"), "{text}");
    let after = Settings::from_toml(&path, &text).unwrap().build().unwrap();
    assert_eq!(after.target, before.target);
    assert_eq!(after.options.limits, before.options.limits);
    // Nothing differs, so a reload needs no restart and keeps the LUNs.
    let r = l.reload().unwrap();
    assert!(r.restart_needed.is_empty(), "{:?}", r.restart_needed);
    assert_eq!(r.loaded.target, before.target);
    // A changed port is reported as needing a restart; a broken file is refused.
    std::fs::write(
        &path,
        text.replacen("[[lun]]", "[target]\nport = 6000\n\n[[lun]]", 1),
    )
    .unwrap();
    assert_eq!(l.reload().unwrap().restart_needed, vec!["target.port"]);
    std::fs::write(&path, "[[lun]]\nnumber = \"x\"\n").unwrap();
    assert!(l.reload().unwrap_err().to_string().contains("srptd.toml:2"));
    assert!(l.save(Some(Path::new("relative.toml"))).is_err());
    let no_file = LiveConfig {
        path: None,
        ..l.clone()
    };
    assert!(no_file
        .reload()
        .unwrap_err()
        .to_string()
        .contains("without --config"));
    assert!(no_file.save(None).unwrap_err().to_string().contains("say where"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lun_identity_and_provisioning() {
    let l = parse(
        r#"
[[lun]]
number = 0
backstore = "ram:1M"
naa = "6001405aabbccdd00112233445566778"
thin = false
serial = "disk0"
[[acl]]
initiator = "ANY"
"#,
    )
    .unwrap();
    let lun = &l.target.luns[0];
    assert_eq!(lun.naa.unwrap()[..4], [0x60, 0x01, 0x40, 0x5a]);
    assert!(!lun.thin);
    let e =
        error("[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\nnaa = \"5001405aabbccdd00112233445566778\"\n");
    assert!(
        e.starts_with("t.toml:4: lun.naa = \"5001405aabbccdd00112233445566778\": expected an NAA"),
        "{e}"
    );
    let e = error(
        "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\nnaa = \"6001405aabbccdd00112233445566778\"\n\
         [[lun]]\nnumber = 1\nbackstore = \"ram:1M\"\nnaa = \"6001405AABBCCDD00112233445566778\"\n",
    );
    assert!(e.starts_with("t.toml:8: lun.naa = "), "{e}");
    assert!(e.ends_with("another LUN has this NAA identifier"), "{e}");
}

#[test]
fn metrics_listener_address() {
    let l = parse("[admin]\nmetrics = \"127.0.0.1:9469\"\n").unwrap();
    assert_eq!(l.options.metrics, Some("127.0.0.1:9469".parse().unwrap()));
    let l = parse("[admin]\nmetrics = \"[::1]:9000\"\n").unwrap();
    assert_eq!(l.options.metrics, Some("[::1]:9000".parse().unwrap()));
    let l = parse("[admin]\nmetrics = \"none\"\n").unwrap();
    assert_eq!(l.options.metrics, None);
    assert_eq!(
        load(None, &Flags::default()).unwrap().options.metrics,
        None,
        "off by default"
    );
    // A bare port listens on localhost; the flag overrides the file.
    let l = load(
        None,
        &Flags {
            metrics: Some("9470".into()),
            ..Flags::default()
        },
    )
    .unwrap();
    assert_eq!(l.options.metrics, Some("127.0.0.1:9470".parse().unwrap()));
    let e = error("[admin]\nmetrics = \"localhost\"\n");
    assert!(e.contains("admin.metrics") && e.contains("\"localhost\""), "{e}");
    let e = load(
        None,
        &Flags {
            metrics: Some("1.2.3.4".into()),
            ..Flags::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("--metrics \"1.2.3.4\": must be an IP address and port"),
        "{e}"
    );
}

#[test]
fn acl_addresses_limit_where_logins_come_from() {
    let l = parse(&format!(
        r#"
[[lun]]
number = 0
backstore = "ram:1M"
[[acl]]
initiator = "{A}"
address = "169.254.77.0/24"
[[acl]]
initiator = "{B}"
"#
    ))
    .unwrap();
    let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
    let p = &l.target.peers;
    assert!(p.allows(&id(A), ip("169.254.77.9")));
    assert!(p.allows(&id(A), ip("::ffff:169.254.77.9")), "IPv4-mapped");
    assert!(!p.allows(&id(A), ip("169.254.78.1")));
    assert!(!p.allows(&id(A), None), "InfiniBand CM logins carry no address");
    assert!(p.allows(&id(B), ip("10.1.2.3")), "no address: from anywhere");
    // ANY with an address: everyone, from there only.
    let l = parse("[[acl]]\ninitiator = \"ANY\"\naddress = \"fe80::1\"\n").unwrap();
    assert!(l.target.peers.allows(&id(B), ip("fe80::1")));
    assert!(!l.target.peers.allows(&id(B), ip("fe80::2")));
    let e = error("[[acl]]\ninitiator = \"ANY\"\naddress = \"10.0.0.0/33\"\n");
    assert!(
        e.starts_with("t.toml:3: acl.address = \"10.0.0.0/33\": expected an IP address or network"),
        "{e}"
    );
}

#[test]
fn target_port_groups_are_read_and_checked() {
    let l = parse(
        r#"
[[target_port_group]]
id = 1
ports = ["rxe0/1"]

[[target_port_group]]
id = 2
ports = ["rxe1/1", "mlx5_0/2"]
state = "active/non-optimized"
"#,
    )
    .unwrap();
    let g = &l.target.port_groups;
    assert_eq!(g.len(), 2);
    assert_eq!(
        (g[0].id, g[0].state),
        (1, crate::scsi::AccessState::ActiveOptimized)
    );
    assert_eq!(g[1].ports, vec!["rxe1/1".to_owned(), "mlx5_0/2".to_owned()]);
    assert_eq!(g[1].state, crate::scsi::AccessState::ActiveNonOptimized);
    let e = error("[[target_port_group]]\nid = 1\nports = [\"rxe0/1\"]\nstate = \"asleep\"\n");
    assert!(e.contains("t.toml:4: target_port_group.state"), "{e}");
    assert!(e.contains("must be one of active/optimized"), "{e}");
    let e = error("[[target_port_group]]\nid = 1\nports = [\"rxe0\"]\n");
    assert!(e.contains("t.toml:3: target_port_group.ports"), "{e}");
    assert!(e.contains("device/port"), "{e}");
    let e = error("[[target_port_group]]\nid = 1\nports = [\"rxe0/1\"]\n[[target_port_group]]\nid = 1\nports = [\"rxe1/1\"]\n");
    assert!(e.contains("t.toml:5: target_port_group.id"), "{e}");
    let e = error("[[target_port_group]]\nid = 3\nports = [\"rxe0/1\"]\n[[target_port_group]]\nid = 4\nports = [\"rxe0/1\"]\n");
    assert!(
        e.contains("t.toml:6: target_port_group.ports") && e.contains("another group"),
        "{e}"
    );
    let e = error("[[target_port_group]]\nid = 0\nports = [\"rxe0/1\"]\n");
    assert!(e.contains("t.toml:2: target_port_group.id"), "{e}");
    let e = error("[[target_port_group]]\nid = 1\nports = [\"rxe0/1\"]\nport = 2\n");
    assert!(e.contains("unknown field"), "{e}");
}

#[test]
fn rbd_backstores_parse_from_the_file() {
    let l = parse(
        "[[lun]]\nnumber = 2\nbackstore = \"rbd:rbd/disk1,conf=/etc/ceph/c.conf,id=srptd\"\nblock_size = 4096\n",
    )
    .unwrap();
    let b = &l.target.luns[0].backstore;
    let BackstoreKind::Rbd(spec) = &b.kind else {
        panic!("{b:?}")
    };
    assert_eq!((spec.pool.as_str(), spec.image.as_str()), ("rbd", "disk1"));
    assert_eq!(spec.conf.as_deref(), Some(Path::new("/etc/ceph/c.conf")));
    assert_eq!(spec.id.as_deref(), Some("srptd"));
    assert_eq!(b.block_size, 4096);
    let e = error("[[lun]]\nnumber = 0\nbackstore = \"rbd:rbd\"\n");
    assert!(
        e.starts_with("t.toml:3: lun.backstore = \"rbd:rbd\":") && e.contains("rbd:<pool>/<image>"),
        "{e}"
    );
    // conf= and id= belong to rbd: only (a file path may contain them).
    let l = parse("[[lun]]\nnumber = 0\nbackstore = \"file:/srv/a,id=x\"\n").unwrap();
    assert_eq!(
        l.target.luns[0].backstore.kind,
        BackstoreKind::File {
            path: "/srv/a,id=x".into(),
            cache: FileCache::Direct,
        }
    );
    let l = parse("[[lun]]\nnumber = 0\nbackstore = \"file:/srv/b,buffered\"\n").unwrap();
    assert_eq!(
        l.target.luns[0].backstore.kind,
        BackstoreKind::File {
            path: "/srv/b".into(),
            cache: FileCache::Buffered,
        }
    );
}
