//! JSON-RPC 2.0 requests and responses (https://www.jsonrpc.org/specification),
//! one JSON object per line. Parsing is strict: unknown methods, missing or
//! mistyped parameters and unexpected parameters are answered with the
//! specification's error codes and a message naming the field; nothing is
//! done for such a request.

use serde_json::{json, Map, Value};

use crate::config::Change;
use crate::scsi::backstore::parse_size;
use crate::scsi::{AccessState, InitiatorPortId};
use crate::wire::parse_hex;

/// Longest request line the server reads (bytes, without the newline).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// JSON-RPC 2.0 error codes (specification section 5.1) and srptd's own.
pub mod code {
    pub const PARSE_ERROR: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Implementation-defined server errors: -32000 to -32099.
    /// The caller may not administer srptd (not root, not srptd's user).
    pub const PERMISSION_DENIED: i64 = -32001;
    /// The request names something that does not exist (a session, a LUN).
    pub const NOT_FOUND: i64 = -32002;
    /// srptd is shutting down.
    pub const SHUTTING_DOWN: i64 = -32003;
    /// The change was refused (invalid value, LUN in use, backstore
    /// error); nothing changed.
    pub const REFUSED: i64 = -32004;
}

/// A call the server carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Identity, listeners, counts, uptime.
    Status,
    /// Every I_T nexus with its channels.
    Sessions,
    /// Every LUN.
    Luns,
    /// Target-wide counters (totals of closed and open channels).
    Stats,
    /// Log one initiator's channels out (SRP_T_LOGOUT, then disconnect).
    SessionLogout { initiator: InitiatorPortId },
    /// A change of the LUNs or ACLs (`lun_add`, `lun_remove`,
    /// `lun_set_read_only`, `acl_add`, `acl_remove`, `acl_map`,
    /// `acl_unmap`).
    Change(Change),
    /// A LUN's new size in bytes (for a block device: none, read it again).
    LunResize { number: u16, size: Option<u64> },
    /// Write the effective configuration (default: the `--config` file).
    SaveConfig { path: Option<String> },
    /// Read the config file again and apply the difference.
    Reload,
    /// Target port groups, their states and ports (ALUA).
    Alua,
    /// Put a target port group in an asymmetric access state.
    AluaSetState { group: u16, state: AccessState },
}

impl Call {
    /// The method names, for errors and `srptd ctl --help`.
    pub const METHODS: &'static [&'static str] = &[
        "status",
        "sessions",
        "luns",
        "stats",
        "session_logout",
        "lun_add",
        "lun_remove",
        "lun_resize",
        "lun_set_read_only",
        "acl_add",
        "acl_remove",
        "acl_map",
        "acl_unmap",
        "save_config",
        "reload",
        "alua",
        "alua_set_state",
    ];
}

/// A parsed request. `id` is `None` for a notification (no response is
/// sent, as the specification requires).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub call: Call,
}

/// A request that cannot be carried out, as a JSON-RPC error.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The request's id when it could be read (`null` otherwise).
    pub id: Value,
    pub code: i64,
    pub message: String,
}

impl RpcError {
    pub fn new(id: Value, code: i64, message: impl Into<String>) -> RpcError {
        RpcError {
            id,
            code,
            message: message.into(),
        }
    }

    /// The response line (without the newline).
    pub fn to_line(&self) -> String {
        json!({
            "jsonrpc": "2.0",
            "error": { "code": self.code, "message": self.message },
            "id": self.id,
        })
        .to_string()
    }
}

/// The response line for a result.
pub fn result_line(id: &Value, result: Value) -> String {
    json!({ "jsonrpc": "2.0", "result": result, "id": id }).to_string()
}

/// The request line for a call (the client's side), with this id.
pub fn request_line(method: &str, params: Option<Value>, id: u64) -> String {
    let mut m = Map::new();
    m.insert("jsonrpc".into(), "2.0".into());
    m.insert("method".into(), method.into());
    if let Some(p) = params {
        m.insert("params".into(), p);
    }
    m.insert("id".into(), id.into());
    Value::Object(m).to_string()
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Request, RpcError> {
    let v: Value = serde_json::from_slice(line)
        .map_err(|e| RpcError::new(Value::Null, code::PARSE_ERROR, format!("parse error: {e}")))?;
    let Value::Object(mut o) = v else {
        return Err(RpcError::new(
            Value::Null,
            code::INVALID_REQUEST,
            "invalid request: expected a JSON object (batches are not supported)",
        ));
    };
    // Section 4: id is a string, a number or null; absent: a notification.
    let id = match o.remove("id") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_) | Value::Null)) => Some(v),
        Some(_) => {
            return Err(RpcError::new(
                Value::Null,
                code::INVALID_REQUEST,
                "invalid request: id must be a string, a number or null",
            ))
        }
    };
    let eid = id.clone().unwrap_or(Value::Null);
    let invalid = |msg: &str| {
        RpcError::new(
            eid.clone(),
            code::INVALID_REQUEST,
            format!("invalid request: {msg}"),
        )
    };
    match o.remove("jsonrpc") {
        Some(Value::String(s)) if s == "2.0" => {}
        _ => return Err(invalid("jsonrpc must be \"2.0\"")),
    }
    let method = match o.remove("method") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(invalid("method must be a string")),
        None => return Err(invalid("method is missing")),
    };
    let params = match o.remove("params") {
        None => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => {
            return Err(RpcError::new(
                eid,
                code::INVALID_PARAMS,
                "invalid params: params must be an object (by-name parameters)",
            ))
        }
    };
    if let Some(k) = o.keys().next() {
        return Err(invalid(&format!("unexpected member \"{k}\"")));
    }
    let mut p = Params {
        id: &eid,
        method: &method,
        map: params,
    };
    let call = match method.as_str() {
        "status" => Call::Status,
        "sessions" => Call::Sessions,
        "luns" => Call::Luns,
        "stats" => Call::Stats,
        "session_logout" => Call::SessionLogout {
            initiator: p.initiator("initiator")?,
        },
        "lun_add" => Call::Change(Change::LunAdd {
            number: p.lun("number")?,
            backstore: p.string("backstore")?,
            read_only: p.opt_bool("read_only")?,
            block_size: p.opt_u32("block_size")?,
            serial: p.opt_string("serial")?,
            naa: p.opt_string("naa")?,
            thin: p.opt_bool("thin")?,
        }),
        "lun_remove" => Call::Change(Change::LunRemove {
            number: p.lun("number")?,
        }),
        "lun_set_read_only" => Call::Change(Change::LunReadOnly {
            number: p.lun("number")?,
            read_only: p.bool("read_only")?,
        }),
        "lun_resize" => Call::LunResize {
            number: p.lun("number")?,
            size: p.opt_size("size")?,
        },
        "acl_add" => Call::Change(Change::AclAdd {
            initiator: p.acl_initiator("initiator")?,
            luns: p.opt_luns("luns")?,
            read_only: p.opt_bool("read_only")?,
            address: p.opt_string("address")?,
        }),
        "acl_remove" => Call::Change(Change::AclRemove {
            initiator: p.acl_initiator("initiator")?,
        }),
        "acl_map" => Call::Change(Change::AclMap {
            initiator: p.acl_initiator("initiator")?,
            lun: p.lun("lun")?,
            mapped_lun: p.opt_u64("mapped_lun", u64::from(u16::MAX))?.map(|v| v as u16),
        }),
        "acl_unmap" => Call::Change(Change::AclUnmap {
            initiator: p.acl_initiator("initiator")?,
            lun: p.lun("lun")?,
        }),
        "save_config" => Call::SaveConfig {
            path: p.opt_string("path")?,
        },
        "reload" => Call::Reload,
        "alua" => Call::Alua,
        "alua_set_state" => Call::AluaSetState {
            group: p.group("group")?,
            state: p.access_state("state")?,
        },
        _ => {
            return Err(RpcError::new(
                eid,
                code::METHOD_NOT_FOUND,
                format!(
                    "method not found: \"{method}\" (methods: {})",
                    Call::METHODS.join(", ")
                ),
            ))
        }
    };
    p.done()?;
    Ok(Request { id, call })
}

/// A method's parameters, taken one by one; what is left over is an error.
struct Params<'a> {
    id: &'a Value,
    method: &'a str,
    map: Map<String, Value>,
}

impl Params<'_> {
    fn error(&self, msg: String) -> RpcError {
        RpcError::new(
            self.id.clone(),
            code::INVALID_PARAMS,
            format!("invalid params: {msg}"),
        )
    }

    fn string(&mut self, name: &str) -> Result<String, RpcError> {
        match self.map.remove(name) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.error(format!("{name}: expected a string, got {v}"))),
            None => Err(self.error(format!("{name} is missing ({} needs it)", self.method))),
        }
    }

    fn opt_string(&mut self, name: &str) -> Result<Option<String>, RpcError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.error(format!("{name}: expected a string, got {v}"))),
        }
    }

    fn opt_bool(&mut self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(v) => Err(self.error(format!("{name}: expected true or false, got {v}"))),
        }
    }

    fn bool(&mut self, name: &str) -> Result<bool, RpcError> {
        self.opt_bool(name)?
            .ok_or_else(|| self.error(format!("{name} is missing ({} needs it)", self.method)))
    }

    fn opt_u64(&mut self, name: &str, max: u64) -> Result<Option<u64>, RpcError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().filter(|&v| v <= max) {
                Some(v) => Ok(Some(v)),
                None => Err(self.error(format!("{name}: {n} is not an integer from 0 to {max}"))),
            },
            Some(v) => Err(self.error(format!("{name}: expected an integer, got {v}"))),
        }
    }

    fn opt_u32(&mut self, name: &str) -> Result<Option<u32>, RpcError> {
        Ok(self.opt_u64(name, u64::from(u32::MAX))?.map(|v| v as u32))
    }

    /// A LUN number (checked against the maximum where it is used).
    fn lun(&mut self, name: &str) -> Result<u16, RpcError> {
        self.opt_u64(name, u64::from(u16::MAX))?
            .map(|v| v as u16)
            .ok_or_else(|| self.error(format!("{name} is missing ({} needs it)", self.method)))
    }

    /// A target port group identifier, 1 to 65535.
    fn group(&mut self, name: &str) -> Result<u16, RpcError> {
        match self.opt_u64(name, u64::from(u16::MAX))? {
            Some(0) => Err(self.error(format!("{name}: target port groups go from 1 to 65535"))),
            Some(v) => Ok(v as u16),
            None => Err(self.error(format!("{name} is missing ({} needs it)", self.method))),
        }
    }

    /// An asymmetric access state by name.
    fn access_state(&mut self, name: &str) -> Result<AccessState, RpcError> {
        let s = self.string(name)?;
        AccessState::parse(&s).ok_or_else(|| {
            let names: Vec<&str> = AccessState::ALL.iter().map(|a| a.name()).collect();
            self.error(format!("{name}: {s:?} is not one of {}", names.join(", ")))
        })
    }

    fn opt_luns(&mut self, name: &str) -> Result<Option<Vec<u16>>, RpcError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .ok_or_else(|| self.error(format!("{name}: {v} is not a LUN number")))
                })
                .collect::<Result<Vec<u16>, _>>()
                .map(Some),
            Some(v) => Err(self.error(format!("{name}: expected an array of LUN numbers, got {v}"))),
        }
    }

    /// A size: bytes as an integer, or a string with a K/M/G/T suffix.
    fn opt_size(&mut self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.error(format!("{name}: {n} is not a byte count"))),
            Some(Value::String(s)) => parse_size(&s)
                .map(Some)
                .ok_or_else(|| self.error(format!("{name}: \"{s}\" is not a size (e.g. 512M, 2G)"))),
            Some(v) => Err(self.error(format!("{name}: expected a size, got {v}"))),
        }
    }

    /// An ACL's initiator: `ANY` or a port ID (kept as written).
    fn acl_initiator(&mut self, name: &str) -> Result<String, RpcError> {
        let s = self.string(name)?;
        if s.eq_ignore_ascii_case("any") || parse_hex::<16>(&s).is_some() {
            Ok(s)
        } else {
            Err(self.error(format!(
                "{name}: \"{s}\" is not ANY or a 32-hex-digit initiator port ID"
            )))
        }
    }

    fn initiator(&mut self, name: &str) -> Result<InitiatorPortId, RpcError> {
        let s = self.string(name)?;
        parse_hex::<16>(&s)
            .ok_or_else(|| self.error(format!("{name}: \"{s}\" is not a 32-hex-digit initiator port ID")))
    }

    fn done(self) -> Result<(), RpcError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(self.error(format!("{}: unknown parameter \"{k}\"", self.method))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: &str) -> RpcError {
        parse_request(line.as_bytes()).unwrap_err()
    }

    const INI: &str = "0000000000000001000000fffe007701";

    #[test]
    fn calls_parse() {
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"status","id":1}"#).unwrap();
        assert_eq!((r.id, r.call), (Some(json!(1)), Call::Status));
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"sessions","params":{},"id":"a"}"#).unwrap();
        assert_eq!((r.id, r.call), (Some(json!("a")), Call::Sessions));
        let line = format!(
            r#"{{"jsonrpc":"2.0","method":"session_logout","params":{{"initiator":"{INI}"}},"id":7}}"#
        );
        let r = parse_request(line.as_bytes()).unwrap();
        assert_eq!(
            r.call,
            Call::SessionLogout {
                initiator: parse_hex::<16>(INI).unwrap()
            }
        );
        // A notification: no id.
        let r = parse_request(br#"{"jsonrpc":"2.0","method":"luns"}"#).unwrap();
        assert_eq!(r.id, None);
    }

    fn call(method: &str, params: &str) -> Result<Call, RpcError> {
        let line = format!(r#"{{"jsonrpc":"2.0","method":"{method}","params":{params},"id":1}}"#);
        parse_request(line.as_bytes()).map(|r| r.call)
    }

    #[test]
    fn alua_calls_parse() {
        assert_eq!(call("alua", "{}").unwrap(), Call::Alua);
        assert_eq!(
            call("alua_set_state", r#"{"group":2,"state":"standby"}"#).unwrap(),
            Call::AluaSetState {
                group: 2,
                state: AccessState::Standby
            }
        );
        let e = call("alua_set_state", r#"{"group":2,"state":"asleep"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_PARAMS);
        assert!(
            e.message
                .contains("state: \"asleep\" is not one of active/optimized"),
            "{}",
            e.message
        );
        let e = call("alua_set_state", r#"{"group":0,"state":"standby"}"#).unwrap_err();
        assert!(
            e.message.contains("group: target port groups go from 1"),
            "{}",
            e.message
        );
        let e = call("alua_set_state", r#"{"state":"standby"}"#).unwrap_err();
        assert!(e.message.contains("group is missing"), "{}", e.message);
        let e = call("alua_set_state", r#"{"group":1,"state":"standby","port":1}"#).unwrap_err();
        assert!(e.message.contains("unknown parameter \"port\""), "{}", e.message);
    }

    #[test]
    fn change_calls_parse() {
        assert_eq!(
            call(
                "lun_add",
                r#"{"number":1,"backstore":"ram:1G","read_only":false,"block_size":4096}"#
            ),
            Ok(Call::Change(Change::LunAdd {
                number: 1,
                backstore: "ram:1G".into(),
                read_only: Some(false),
                block_size: Some(4096),
                serial: None,
                naa: None,
                thin: None,
            }))
        );
        assert_eq!(
            call("lun_resize", r#"{"number":1,"size":"2G"}"#),
            Ok(Call::LunResize {
                number: 1,
                size: Some(2 << 30)
            })
        );
        assert_eq!(
            call("lun_resize", r#"{"number":1,"size":1048576}"#),
            Ok(Call::LunResize {
                number: 1,
                size: Some(1 << 20)
            })
        );
        assert_eq!(
            call("lun_resize", r#"{"number":1}"#),
            Ok(Call::LunResize {
                number: 1,
                size: None
            })
        );
        assert_eq!(
            call(
                "acl_add",
                &format!(r#"{{"initiator":"{INI}","luns":[1,2],"read_only":true}}"#)
            ),
            Ok(Call::Change(Change::AclAdd {
                initiator: INI.into(),
                luns: Some(vec![1, 2]),
                read_only: Some(true),
                address: None,
            }))
        );
        assert_eq!(
            call(
                "acl_map",
                &format!(r#"{{"initiator":"{INI}","lun":3,"mapped_lun":0}}"#)
            ),
            Ok(Call::Change(Change::AclMap {
                initiator: INI.into(),
                lun: 3,
                mapped_lun: Some(0),
            }))
        );
        assert_eq!(
            call(
                "acl_map",
                &format!(r#"{{"initiator":"{INI}","lun":3,"mapped_lun":null}}"#)
            ),
            Ok(Call::Change(Change::AclMap {
                initiator: INI.into(),
                lun: 3,
                mapped_lun: None,
            }))
        );
        assert_eq!(
            call("acl_unmap", r#"{"initiator":"ANY","lun":0}"#),
            Ok(Call::Change(Change::AclUnmap {
                initiator: "ANY".into(),
                lun: 0
            }))
        );
        assert_eq!(call("save_config", "{}"), Ok(Call::SaveConfig { path: None }));
        assert_eq!(call("reload", "{}"), Ok(Call::Reload));
    }

    #[test]
    fn change_params_are_checked_by_name() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "lun_add",
                r#"{"backstore":"ram:1G"}"#,
                "number is missing (lun_add needs it)",
            ),
            (
                "lun_add",
                r#"{"number":"1","backstore":"ram:1G"}"#,
                "number: expected an integer, got \"1\"",
            ),
            (
                "lun_add",
                r#"{"number":70000,"backstore":"ram:1G"}"#,
                "number: 70000 is not an integer from 0 to 65535",
            ),
            (
                "lun_add",
                r#"{"number":-1,"backstore":"ram:1G"}"#,
                "number: -1 is not an integer",
            ),
            (
                "lun_add",
                r#"{"number":1,"backstore":5}"#,
                "backstore: expected a string, got 5",
            ),
            (
                "lun_add",
                r#"{"number":1,"backstore":"ram:1G","read_only":"yes"}"#,
                "read_only: expected true or false",
            ),
            (
                "lun_add",
                r#"{"number":1,"backstore":"ram:1G","size":1}"#,
                "lun_add: unknown parameter \"size\"",
            ),
            ("lun_set_read_only", r#"{"number":1}"#, "read_only is missing"),
            (
                "lun_resize",
                r#"{"number":1,"size":"big"}"#,
                "size: \"big\" is not a size",
            ),
            (
                "lun_resize",
                r#"{"number":1,"size":[1]}"#,
                "size: expected a size",
            ),
            (
                "acl_add",
                r#"{"initiator":"xyz"}"#,
                "initiator: \"xyz\" is not ANY or a 32-hex-digit",
            ),
            (
                "acl_add",
                &format!(r#"{{"initiator":"{INI}","luns":[1,"a"]}}"#),
                "luns: \"a\" is not a LUN number",
            ),
            (
                "acl_add",
                &format!(r#"{{"initiator":"{INI}","luns":7}}"#),
                "luns: expected an array of LUN numbers",
            ),
            (
                "acl_map",
                &format!(r#"{{"initiator":"{INI}"}}"#),
                "lun is missing (acl_map needs it)",
            ),
            (
                "acl_map",
                &format!(r#"{{"initiator":"{INI}","lun":1,"mapped_lun":"0"}}"#),
                "mapped_lun: expected an integer",
            ),
            ("save_config", r#"{"path":1}"#, "path: expected a string"),
            ("reload", r#"{"now":true}"#, "reload: unknown parameter \"now\""),
        ];
        for (method, params, msg) in cases {
            let e = call(method, params).unwrap_err();
            assert_eq!(e.code, code::INVALID_PARAMS, "{method} {params}");
            assert!(e.message.contains(msg), "{method} {params}: {}", e.message);
        }
    }

    /// Each bad request gets the specification's code and a message that
    /// names what is wrong.
    #[test]
    fn bad_requests_name_the_problem() {
        let cases: &[(&str, i64, &str)] = &[
            ("{", code::PARSE_ERROR, "parse error"),
            ("[]", code::INVALID_REQUEST, "expected a JSON object"),
            (
                r#"{"method":"status","id":1}"#,
                code::INVALID_REQUEST,
                "jsonrpc must be \"2.0\"",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1}"#,
                code::INVALID_REQUEST,
                "method is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
                code::INVALID_REQUEST,
                "method must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"status","id":[1]}"#,
                code::INVALID_REQUEST,
                "id must be",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"status","id":1,"x":2}"#,
                code::INVALID_REQUEST,
                "unexpected member \"x\"",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"reboot","id":1}"#,
                code::METHOD_NOT_FOUND,
                "method not found: \"reboot\"",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"status","params":[1],"id":1}"#,
                code::INVALID_PARAMS,
                "params must be an object",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"status","params":{"verbose":true},"id":1}"#,
                code::INVALID_PARAMS,
                "status: unknown parameter \"verbose\"",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"session_logout","id":1}"#,
                code::INVALID_PARAMS,
                "initiator is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"session_logout","params":{"initiator":5},"id":1}"#,
                code::INVALID_PARAMS,
                "initiator: expected a string, got 5",
            ),
            (
                r#"{"jsonrpc":"2.0","method":"session_logout","params":{"initiator":"12"},"id":1}"#,
                code::INVALID_PARAMS,
                "initiator: \"12\" is not a 32-hex-digit initiator port ID",
            ),
        ];
        for (line, want_code, want_msg) in cases {
            let e = err(line);
            assert_eq!(e.code, *want_code, "{line}: {e:?}");
            assert!(e.message.contains(want_msg), "{line}: {}", e.message);
        }
        // The id is echoed once it could be read.
        assert_eq!(err(r#"{"jsonrpc":"2.0","method":"reboot","id":9}"#).id, json!(9));
        assert_eq!(err("{").id, Value::Null);
    }

    #[test]
    fn responses_are_json_rpc() {
        let ok: Value = serde_json::from_str(&result_line(&json!(3), json!({"a": 1}))).unwrap();
        assert_eq!(ok, json!({"jsonrpc": "2.0", "result": {"a": 1}, "id": 3}));
        let e: Value =
            serde_json::from_str(&RpcError::new(json!("x"), code::NOT_FOUND, "no such session").to_line())
                .unwrap();
        assert_eq!(
            e,
            json!({"jsonrpc": "2.0", "error": {"code": -32002, "message": "no such session"}, "id": "x"})
        );
        let req: Value = serde_json::from_str(&request_line("luns", None, 4)).unwrap();
        assert_eq!(req, json!({"jsonrpc": "2.0", "method": "luns", "id": 4}));
        assert!(parse_request(request_line("stats", Some(json!({})), 1).as_bytes()).is_ok());
    }
}
