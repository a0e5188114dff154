//! ACLs with mapped LUN numbers (LIO's mapped LUNs): the file syntax, its
//! errors, the admin calls and save-config; and where ACL errors point.

use std::collections::{BTreeMap, HashSet};

use super::*;
use crate::scsi::InitiatorPortId;

const A: &str = "0000000000000001000000fffe007701";
const B: &str = "0000000000000002000000fffe007701";

fn id(hex: &str) -> InitiatorPortId {
    parse_hex::<16>(hex).unwrap()
}

fn settings(text: &str) -> Settings {
    Settings::from_toml(Path::new("t.toml"), text).unwrap()
}

fn error(text: &str) -> String {
    match Settings::from_toml(Path::new("t.toml"), text).and_then(|s| s.build()) {
        Ok(l) => panic!("accepted: {l:?}"),
        Err(e) => e.to_string(),
    }
}

/// LUNs 0, 1 and 3; A sees every LUN, B sees LUN 3 as its LUN 0 and LUN 1
/// as itself.
fn mapped() -> String {
    format!(
        r#"
[[lun]]
number = 0
backstore = "ram:1M"
[[lun]]
number = 1
backstore = "ram:1M"
[[lun]]
number = 3
backstore = "ram:1M"

[[acl]]
initiator = "{A}"

[[acl]]
initiator = "{B}"
luns = [1, {{ lun = 3, mapped_lun = 0 }}]
"#
    )
}

#[test]
fn an_acl_maps_a_lun_under_another_number() {
    let s = settings(&mapped());
    assert_eq!(
        s.acls[1].luns.as_ref().unwrap().value,
        [
            AclLun::same(1),
            AclLun {
                lun: 3,
                mapped_lun: 0
            }
        ]
    );
    let t = s.build().unwrap().target;
    let by_lun: BTreeMap<u16, &LunConfig> = t.luns.iter().map(|l| (l.lun, l)).collect();
    assert_eq!(by_lun[&3].mapped_as, BTreeMap::from([(id(B), 0)]));
    assert_eq!(
        by_lun[&3].access,
        Some(Access::Only(HashSet::from([id(A), id(B)])))
    );
    assert_eq!(by_lun[&0].access, Some(Access::Only(HashSet::from([id(A)]))));
    assert!(by_lun[&1].mapped_as.is_empty());
    // `{ lun = N }` alone is LUN N under its own number.
    let s = settings(&mapped().replace("{ lun = 3, mapped_lun = 0 }", "{ lun = 3 }"));
    assert_eq!(s.acls[1].luns.as_ref().unwrap().value[1], AclLun::same(3));
}

#[test]
fn mapping_errors_name_file_line_and_field() {
    let cases = [
        (
            "[1, { lun = 3, mapped_lun = 1 }]",
            "t.toml:17: acl.luns = { lun = 3, mapped_lun = 1 }: LUN 1 and LUN 3 would both be LUN 1 for this initiator",
        ),
        (
            "[{ lun = 1, mapped_lun = 5 }, { lun = 3, mapped_lun = 5 }]",
            "t.toml:17: acl.luns = { lun = 3, mapped_lun = 5 }: LUN 1 and LUN 3 would both be LUN 5 for this initiator",
        ),
        (
            "[3, { lun = 3, mapped_lun = 0 }]",
            "t.toml:17: acl.luns = { lun = 3, mapped_lun = 0 }: LUN 3 is in this list twice",
        ),
        (
            "[{ lun = 3, mapped_lun = 16384 }]",
            "t.toml:17: acl.luns = { lun = 3, mapped_lun = 16384 }: LUN numbers go from 0 to 16383",
        ),
        (
            "[{ lun = 2, mapped_lun = 0 }]",
            "t.toml:17: acl.luns = { lun = 2, mapped_lun = 0 }: no such LUN",
        ),
    ];
    for (list, want) in cases {
        let text = mapped().replace("[1, { lun = 3, mapped_lun = 0 }]", list);
        assert_eq!(error(&text), want, "for {list}");
    }
    // Syntax: the line and the element's expected form.
    let e = error(&mapped().replace("mapped_lun = 0", "as = 0"));
    assert!(
        e.starts_with("t.toml:17: unknown field `as`, expected `lun` or `mapped_lun`"),
        "{e}"
    );
    let e = error(&mapped().replace("[1, {", "[\"1\", {"));
    assert!(e.starts_with("t.toml:17: "), "{e}");
    assert!(
        e.contains("expected a LUN number or { lun = N, mapped_lun = M }"),
        "{e}"
    );
}

#[test]
fn save_config_keeps_the_mappings() {
    let only_mapped = mapped().replace("[1, {", "[{ lun = 1, mapped_lun = 4 }, {");
    for file in [mapped(), only_mapped] {
        let s = settings(&file);
        let text = s.to_toml();
        assert!(text.contains("mapped_lun = 0 }"), "{text}");
        let again = Settings::from_toml(Path::new("t.toml"), &text).unwrap();
        assert_eq!(
            again.acls[1].luns.as_ref().unwrap().value,
            s.acls[1].luns.as_ref().unwrap().value
        );
        assert_eq!(again.build().unwrap().target, s.build().unwrap().target);
    }
}

fn live() -> LiveConfig {
    LiveConfig {
        settings: settings(&mapped()),
        path: None,
        flags: Flags::default(),
    }
}

fn map(lun: u16, mapped_lun: Option<u16>) -> Change {
    Change::AclMap {
        initiator: B.into(),
        lun,
        mapped_lun,
    }
}

#[test]
fn acl_map_sets_and_changes_the_number() {
    let mut l = live();
    // LUN 0 for B as its LUN 7.
    let (s, loaded) = l.change(&map(0, Some(7))).unwrap();
    let lun0 = &loaded.target.luns[0];
    assert_eq!(lun0.mapped_as, BTreeMap::from([(id(B), 7)]));
    l.commit(s);
    // LUN 3, B's LUN 0, becomes its LUN 2.
    let (s, loaded) = l.change(&map(3, Some(2))).unwrap();
    assert_eq!(loaded.target.luns[2].mapped_as, BTreeMap::from([(id(B), 2)]));
    l.commit(s);
    let list = &l.settings.acls[1].luns.as_ref().unwrap().value;
    assert_eq!(
        list,
        &[
            AclLun {
                lun: 0,
                mapped_lun: 7
            },
            AclLun::same(1),
            AclLun {
                lun: 3,
                mapped_lun: 2
            }
        ]
    );
    // Unmapped by the LUN's own number.
    let (s, loaded) = l
        .change(&Change::AclUnmap {
            initiator: B.into(),
            lun: 3,
        })
        .unwrap();
    assert!(loaded.target.luns[2].mapped_as.is_empty());
    l.commit(s);
    // Refused: a number taken, the same number again, a LUN mapped already.
    let e = l.change(&map(3, Some(1))).unwrap_err().to_string();
    assert_eq!(
        e,
        "mapped_lun = { lun = 3, mapped_lun = 1 }: LUN 1 and LUN 3 would both be LUN 1 for this initiator"
    );
    let e = l.change(&map(0, Some(7))).unwrap_err().to_string();
    assert_eq!(e, "mapped_lun = 7: already this LUN's number for this initiator");
    let e = l.change(&map(1, None)).unwrap_err().to_string();
    assert_eq!(e, "lun = 1: already mapped for this initiator");
    // An ACL without a list gets one: every LUN, then the mapping.
    let (_, loaded) = l
        .change(&Change::AclMap {
            initiator: A.into(),
            lun: 0,
            mapped_lun: Some(9),
        })
        .unwrap();
    assert_eq!(
        loaded.target.luns[0].mapped_as,
        BTreeMap::from([(id(A), 9), (id(B), 7)])
    );
}

#[test]
fn any_acl_errors_point_at_the_any_acl() {
    // Beside per-initiator LUN lists: the ANY ACL's line, and where the
    // list is.
    let text = mapped().replace(
        "[[acl]]\ninitiator = \"0000000000000001",
        "[[acl]]\ninitiator = \"ANY\"\n[[acl]]\ninitiator = \"0000000000000001",
    );
    assert_eq!(
        error(&text),
        "t.toml:13: acl.initiator = \"ANY\": an ANY ACL lets everyone see every LUN: per-initiator LUN lists (acl.luns at t.toml:19) would have no effect"
    );
    // Read-only ANY, from a file.
    let e = error(
        "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n[[acl]]\ninitiator = \"ANY\"\n\nread_only = true\n",
    );
    assert_eq!(
        e,
        "t.toml:7: acl.read_only = true: the ANY ACL cannot be read-only (set read_only on the LUNs instead)"
    );
}

#[test]
fn an_initiator_s_read_only_acl_beside_any_applies() {
    let s = settings(&format!(
        "[[lun]]\nnumber = 0\nbackstore = \"ram:1M\"\n[[acl]]\ninitiator = \"ANY\"\n[[acl]]\ninitiator = \"{B}\"\nread_only = true\n"
    ));
    let t = s.build().unwrap().target;
    assert_eq!(t.access, Access::Any);
    assert_eq!(t.luns[0].access, None, "everyone sees it");
    assert_eq!(t.luns[0].read_only_for, HashSet::from([id(B)]));
}
