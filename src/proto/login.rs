//! Login negotiation (SRP r16a 6.2 SRP_LOGIN_REQ, 6.3 SRP_LOGIN_RSP,
//! 6.4 SRP_LOGIN_REJ). Pure: decides accept or reject from the request, the
//! target's identity and limits, the access list verdict and how many
//! channels the I_T nexus already has.

use crate::wire::{
    ImmediateDesc, LoginReject, LoginRequest, LoginResponse, RejectReason, BUF_FMT_DIRECT, BUF_FMT_INDIRECT,
};

/// SRP_CMD without additional CDB or descriptors (SRP r16a 6.8).
const SRP_CMD_MIN_LEN: u32 = 48;
/// Smallest request IU a channel can work with: an SRP_LOGIN_REQ is 64 bytes
/// and an SRP_CMD with one direct descriptor is 64 bytes.
pub const MIN_IT_IU_LEN: u32 = 64;

/// Identity of this SRP target port: the 16-byte TARGET PORT IDENTIFIER is
/// the I/O controller extension followed by the IOC GUID, as the Linux
/// initiator builds it from `id_ext` and `ioc_guid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPortId {
    /// Identifier extension (`id_ext`).
    pub id_ext: u64,
    /// I/O controller GUID (`ioc_guid`).
    pub ioc_guid: u64,
}

impl TargetPortId {
    /// The 16 bytes as they appear in SRP_LOGIN_REQ.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.id_ext.to_be_bytes());
        b[8..].copy_from_slice(&self.ioc_guid.to_be_bytes());
        b
    }
}

/// What the target offers every channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Largest request IU accepted (receive buffer size).
    pub max_it_iu_len: u32,
    /// Largest IU the target sends (send buffer size).
    pub max_ti_iu_len: u32,
    /// Credits granted per channel (REQUEST LIMIT DELTA of SRP_LOGIN_RSP).
    pub queue_depth: u32,
    /// Whether immediate data is offered to initiators that request it.
    pub immediate_data: bool,
    /// Most RDMA channels one I_T nexus may hold.
    pub max_channels_per_nexus: u32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            // The Linux initiator asks for 8260 bytes with immediate data
            // (68-byte header + 8 KiB); allow room for larger settings.
            max_it_iu_len: 64 * 1024 + 68,
            max_ti_iu_len: 256,
            queue_depth: 128,
            immediate_data: true,
            max_channels_per_nexus: 64,
        }
    }
}

/// What happens to the other channels of the nexus (SRP r16a 6.2,
/// MULTI-CHANNEL ACTION, and 6.3 MULTI-CHANNEL RESULT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiChannel {
    /// SINGLE RDMA CHANNEL: every existing channel of the nexus is ended.
    TerminateOthers,
    /// MULTIPLE INDEPENDENT RDMA CHANNELS: existing channels are kept.
    Keep,
}

/// An accepted login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Request IU length granted (receive slot size).
    pub it_iu_len: u32,
    /// Offset of immediate data in SRP_CMD, when immediate data is in use.
    pub imm_data_offset: Option<u16>,
    /// What to do with the nexus's other channels.
    pub multichannel: MultiChannel,
    /// The SRP_LOGIN_RSP to send as CM private data.
    pub response: LoginResponse,
}

/// Decides an SRP_LOGIN_REQ.
///
/// `allowed` is the access-list verdict for the initiator port;
/// `existing_channels` counts live channels of the same I_T nexus.
pub fn negotiate(
    req: &LoginRequest,
    target: TargetPortId,
    limits: &LoginLimits,
    allowed: bool,
    existing_channels: u32,
) -> Result<Accepted, LoginReject> {
    let reject = |reason: RejectReason| LoginReject {
        tag: req.tag,
        reason,
        buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
    };
    // SRP r16a 6.4: "the requested maximum initiator to target IU length is
    // larger than the maximum supported".
    if req.req_it_iu_len > limits.max_it_iu_len {
        return Err(reject(RejectReason::IT_IU_LENGTH_TOO_LARGE));
    }
    if req.req_it_iu_len < MIN_IT_IU_LEN {
        return Err(reject(RejectReason::UNABLE_ESTABLISH_CHANNEL));
    }
    // SRP r16a 6.2: TARGET PORT IDENTIFIER names the port the initiator wants.
    if req.target_port_id != target.to_bytes() {
        return Err(reject(RejectReason::UNABLE_ASSOCIATE_CHANNEL));
    }
    // SRP r16a 6.2 REQUIRED BUFFER FORMATS: we support direct and indirect;
    // an initiator that can use neither cannot send data.
    if req.req_buf_fmt & (BUF_FMT_DIRECT | BUF_FMT_INDIRECT) == 0 {
        return Err(reject(RejectReason::UNSUPPORTED_DESCRIPTOR_FORMAT));
    }
    if !allowed {
        return Err(reject(RejectReason::UNABLE_ESTABLISH_CHANNEL));
    }
    let multichannel = match req.multichannel_action() {
        LoginRequest::SINGLE => MultiChannel::TerminateOthers,
        LoginRequest::MULTI => {
            if existing_channels >= limits.max_channels_per_nexus {
                return Err(reject(RejectReason::CHANNEL_LIMIT_REACHED));
            }
            MultiChannel::Keep
        }
        // Values 2 and 3 are reserved.
        _ => return Err(reject(RejectReason::MULTICHANNEL_UNSUPPORTED)),
    };
    // Immediate data (SRP-2, as the Linux initiator uses it): the data
    // starts at IMMEDIATE DATA OFFSET, which must lie past the SRP_CMD header
    // and the 4-byte immediate data descriptor (`struct srp_imm_buf`) that
    // follows it, and inside the IU. At an offset below that no SRP_CMD can
    // carry immediate data, so it is not offered.
    let imm_data_offset = (limits.immediate_data
        && req.req_flags & LoginRequest::IMMED_REQUESTED != 0
        && u32::from(req.imm_data_offset) >= SRP_CMD_MIN_LEN + ImmediateDesc::LEN as u32
        && u32::from(req.imm_data_offset) < req.req_it_iu_len)
        .then_some(req.imm_data_offset);

    let mut rsp_flags = match (multichannel, existing_channels) {
        (_, 0) => LoginResponse::NO_CHANNELS_TERMINATED,
        (MultiChannel::TerminateOthers, _) => LoginResponse::TERMINATED,
        (MultiChannel::Keep, _) => LoginResponse::MAINTAINED,
    };
    if imm_data_offset.is_some() {
        rsp_flags |= LoginResponse::IMMED_SUPPORTED;
    }
    Ok(Accepted {
        it_iu_len: req.req_it_iu_len,
        imm_data_offset,
        multichannel,
        response: LoginResponse {
            tag: req.tag,
            req_lim_delta: limits.queue_depth,
            max_it_iu_len: req.req_it_iu_len,
            max_ti_iu_len: limits.max_ti_iu_len,
            buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            rsp_flags,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Tag;

    const TGT: TargetPortId = TargetPortId {
        id_ext: 0x0000_00ff_fe00_7701,
        ioc_guid: 0x0000_00ff_fe00_7701,
    };

    fn linux_req() -> LoginRequest {
        LoginRequest {
            tag: Tag(7),
            req_it_iu_len: 8260,
            req_buf_fmt: BUF_FMT_DIRECT | BUF_FMT_INDIRECT,
            req_flags: LoginRequest::IMMED_REQUESTED | LoginRequest::MULTI,
            imm_data_offset: 68,
            initiator_port_id: [0x11; 16],
            target_port_id: TGT.to_bytes(),
        }
    }

    fn reason(r: Result<Accepted, LoginReject>) -> RejectReason {
        r.expect_err("expected a reject").reason
    }

    #[test]
    fn accepts_linux_login_with_immediate_data() {
        let a = negotiate(&linux_req(), TGT, &LoginLimits::default(), true, 0).unwrap();
        assert_eq!(a.it_iu_len, 8260);
        assert_eq!(a.imm_data_offset, Some(68));
        assert_eq!(a.multichannel, MultiChannel::Keep);
        assert_eq!(a.response.req_lim_delta, 128);
        assert_eq!(a.response.max_it_iu_len, 8260);
        assert_eq!(a.response.tag, Tag(7));
        assert_eq!(a.response.rsp_flags, LoginResponse::IMMED_SUPPORTED);
    }

    #[test]
    fn multichannel_results() {
        let mut r = linux_req();
        let a = negotiate(&r, TGT, &LoginLimits::default(), true, 1).unwrap();
        assert_eq!(a.response.rsp_flags & 3, LoginResponse::MAINTAINED);
        r.req_flags = LoginRequest::SINGLE;
        let a = negotiate(&r, TGT, &LoginLimits::default(), true, 2).unwrap();
        assert_eq!(a.multichannel, MultiChannel::TerminateOthers);
        assert_eq!(
            a.response.rsp_flags,
            LoginResponse::TERMINATED,
            "no immediate data when not requested"
        );
        assert_eq!(a.imm_data_offset, None);
    }

    #[test]
    fn every_reject_reason() {
        let l = LoginLimits::default();
        let mut r = linux_req();
        r.req_it_iu_len = l.max_it_iu_len + 1;
        assert_eq!(
            reason(negotiate(&r, TGT, &l, true, 0)),
            RejectReason::IT_IU_LENGTH_TOO_LARGE
        );
        r.req_it_iu_len = 32;
        assert_eq!(
            reason(negotiate(&r, TGT, &l, true, 0)),
            RejectReason::UNABLE_ESTABLISH_CHANNEL
        );
        let mut r = linux_req();
        r.target_port_id[15] ^= 1;
        assert_eq!(
            reason(negotiate(&r, TGT, &l, true, 0)),
            RejectReason::UNABLE_ASSOCIATE_CHANNEL
        );
        let mut r = linux_req();
        r.req_buf_fmt = 0;
        assert_eq!(
            reason(negotiate(&r, TGT, &l, true, 0)),
            RejectReason::UNSUPPORTED_DESCRIPTOR_FORMAT
        );
        assert_eq!(
            reason(negotiate(&linux_req(), TGT, &l, false, 0)),
            RejectReason::UNABLE_ESTABLISH_CHANNEL
        );
        assert_eq!(
            reason(negotiate(&linux_req(), TGT, &l, true, l.max_channels_per_nexus)),
            RejectReason::CHANNEL_LIMIT_REACHED
        );
        let mut r = linux_req();
        r.req_flags = 3;
        assert_eq!(
            reason(negotiate(&r, TGT, &l, true, 0)),
            RejectReason::MULTICHANNEL_UNSUPPORTED
        );
        // The reject echoes the tag and the formats we support.
        let rej = negotiate(&r, TGT, &l, true, 0).unwrap_err();
        assert_eq!(rej.tag, Tag(7));
        assert_eq!(rej.buf_fmt, BUF_FMT_DIRECT | BUF_FMT_INDIRECT);
    }

    #[test]
    fn bad_immediate_offset_disables_immediate_data() {
        let mut r = linux_req();
        r.imm_data_offset = 20; // inside the SRP_CMD header
        let a = negotiate(&r, TGT, &LoginLimits::default(), true, 0).unwrap();
        assert_eq!(a.imm_data_offset, None);
        assert_eq!(a.response.rsp_flags & LoginResponse::IMMED_SUPPORTED, 0);
        // Found by the `login` fuzz target: offsets 48..52 were accepted, but
        // the immediate data descriptor occupies bytes 48..52 of every
        // SRP_CMD, so no command could use them.
        for off in 48..52 {
            r.imm_data_offset = off;
            let a = negotiate(&r, TGT, &LoginLimits::default(), true, 0).unwrap();
            assert_eq!(a.imm_data_offset, None, "offset {off}");
        }
        r.imm_data_offset = 52;
        let a = negotiate(&r, TGT, &LoginLimits::default(), true, 0).unwrap();
        assert_eq!(a.imm_data_offset, Some(52));
        let l = LoginLimits {
            immediate_data: false,
            ..LoginLimits::default()
        };
        assert_eq!(
            negotiate(&linux_req(), TGT, &l, true, 0).unwrap().imm_data_offset,
            None
        );
    }
}
