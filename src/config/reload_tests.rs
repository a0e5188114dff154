//! A reload's difference applied to a served target: what changed and the
//! unit attentions each I_T nexus gets (SPC-4 6.33, SAM-5 5.14).

use super::*;
use crate::scsi::lun::encode_lun;
use crate::scsi::{Nexus, Sense, Target};

const A: &str = "0000000000000001000000fffe007701";
const B: &str = "0000000000000002000000fffe007701";
const C: &str = "0000000000000003000000fffe007701";
const D: &str = "0000000000000004000000fffe007701";

fn id(hex: &str) -> crate::scsi::InitiatorPortId {
    parse_hex::<16>(hex).unwrap()
}

/// What TEST UNIT READY on `lun` answers: `None` for GOOD, else the
/// sense's ASC and ASCQ.
fn tur(n: &Nexus, lun: u16) -> Option<(u8, u8)> {
    n.plan(encode_lun(lun), &[0; 6]).err().map(|s| (s.asc, s.ascq))
}

const RLDHC: Option<(u8, u8)> = Some((0x3f, 0x0e));
const NOT_SUPPORTED: Option<(u8, u8)> = Some((0x25, 0x00));

#[test]
fn a_reload_adds_and_removes_luns_and_acls_and_tells_each_nexus() {
    let dir = std::env::temp_dir().join(format!("srptd-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("srptd.toml");
    let lun = |n: u16| format!("[[lun]]\nnumber = {n}\nbackstore = \"ram:1M\"\n");
    let before = format!(
        "{}{}{}[[acl]]\ninitiator = \"{A}\"\n[[acl]]\ninitiator = \"{B}\"\nluns = [1]\n[[acl]]\ninitiator = \"{C}\"\nluns = [2]\n",
        lun(0),
        lun(1),
        lun(2)
    );
    std::fs::write(&path, &before).unwrap();
    let mut live = LiveConfig {
        settings: read(Some(&path), &Flags::default()).unwrap(),
        path: Some(path.clone()),
        flags: Flags::default(),
    };
    let t = Target::new(live.settings.build().unwrap().target).unwrap();
    let (a, b, c) = (t.nexus(id(A)), t.nexus(id(B)), t.nexus(id(C)));
    for (n, l) in [(&a, 0), (&a, 1), (&a, 2), (&b, 1), (&c, 2)] {
        assert_eq!(
            n.plan(encode_lun(l), &[0; 6]).unwrap_err(),
            Sense::power_on_reset()
        );
    }
    // LUN 1 and B's ACL go; LUN 3 comes, C sees it as its LUN 0; D's ACL comes.
    let after = format!(
        "{}{}{}[[acl]]\ninitiator = \"{A}\"\n[[acl]]\ninitiator = \"{C}\"\nluns = [2, {{ lun = 3, mapped_lun = 0 }}]\n[[acl]]\ninitiator = \"{D}\"\nluns = [0]\n",
        lun(0),
        lun(2),
        lun(3)
    );
    std::fs::write(&path, &after).unwrap();
    let r = live.reload().unwrap();
    assert!(r.restart_needed.is_empty(), "{:?}", r.restart_needed);
    let applied = t.apply(&r.loaded.target).unwrap();
    live.commit(r.settings);
    assert_eq!(applied.added, vec![3]);
    assert_eq!(applied.removed, vec![1]);
    assert!(applied.read_only.is_empty());
    assert!(applied.access_changed);
    assert_eq!(
        applied.nexuses_notified, 3,
        "A, B and C each see another inventory"
    );
    // A: REPORTED LUNS DATA HAS CHANGED once on each LUN it sees now.
    for l in [0, 2, 3] {
        assert_eq!(tur(&a, l), RLDHC, "A, LUN {l}");
        assert_eq!(tur(&a, l), None, "A, LUN {l} again");
    }
    assert_eq!(tur(&a, 1), NOT_SUPPORTED);
    // B sees nothing now: nothing to report on, every LUN is gone.
    assert_eq!(tur(&b, 1), NOT_SUPPORTED);
    assert_eq!(tur(&b, 0), NOT_SUPPORTED);
    assert!(!t.login_allowed(&id(B), None));
    // C: on its LUN 2 and its LUN 0 (LUN 3).
    for l in [2, 0] {
        assert_eq!(tur(&c, l), RLDHC, "C, LUN {l}");
        assert_eq!(tur(&c, l), None);
    }
    assert_eq!(t.lun_map(&id(C)), vec![(0, 3), (2, 2)]);
    // D logs in afterwards: its nexus starts with the reset condition on LUN 0.
    assert!(t.login_allowed(&id(D), None));
    let d = t.nexus(id(D));
    assert_eq!(
        d.plan(encode_lun(0), &[0; 6]).unwrap_err(),
        Sense::power_on_reset()
    );
    assert_eq!(tur(&d, 0), None);
    assert_eq!(tur(&d, 2), NOT_SUPPORTED);
    // Reloading the same file changes nothing and tells nobody.
    let r = live.reload().unwrap();
    let applied = t.apply(&r.loaded.target).unwrap();
    assert!(applied.is_empty() && applied.nexuses_notified == 0, "{applied:?}");
    assert_eq!(tur(&a, 0), None);
    std::fs::remove_dir_all(&dir).unwrap();
}
