//! Request-limit (credit) accounting for one channel.
//!
//! SRP r16a 5.6 (flow control): the target grants the initiator a request
//! limit; every request IU the initiator sends (SRP_CMD, SRP_TSK_MGMT,
//! SRP_I_LOGOUT) consumes one credit, and the target returns credits through
//! the REQUEST LIMIT DELTA field of SRP_LOGIN_RSP, SRP_RSP, SRP_CRED_REQ and
//! SRP_AER_REQ. Responses from the initiator (SRP_CRED_RSP, SRP_AER_RSP) do
//! not consume credits.
//!
//! Every credit corresponds to a posted receive buffer, so a credit is only
//! returned once the receive buffer of the request that consumed it has been
//! posted again. The channel posts a few receive buffers beyond the credit
//! count (see [`RESERVED_RECVS`]) for initiator responses and for detecting
//! an initiator that overdraws its limit.

/// Receive buffers posted beyond the granted credits: one for an SRP_CRED_RSP
/// or SRP_AER_RSP answering our request, and one spare so that a request sent
/// beyond the limit lands in a buffer and is answered with TASK SET FULL
/// instead of stalling the queue pair with receiver-not-ready NAKs.
pub const RESERVED_RECVS: u32 = 2;

/// Credit state as seen by the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credits {
    granted: u32,
    /// Requests received whose credit has not yet been given back.
    in_use: u32,
    /// Credits whose receive buffer is posted again but which have not been
    /// reported to the initiator yet.
    owed: u32,
}

/// The initiator sent a request while it had no credit left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overdrawn;

impl Credits {
    /// The login grants `granted` credits (SRP_LOGIN_RSP REQUEST LIMIT DELTA).
    pub fn new(granted: u32) -> Credits {
        Credits {
            granted,
            in_use: 0,
            owed: 0,
        }
    }

    /// Credits granted at login.
    pub fn granted(&self) -> u32 {
        self.granted
    }

    /// Requests outstanding (received, credit not yet returned or owed).
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    /// Credits ready to be returned in the next IU that carries a delta.
    pub fn owed(&self) -> u32 {
        self.owed
    }

    /// The initiator's request limit as the target computes it: credits it
    /// may still spend before the target returns more.
    pub fn initiator_limit(&self) -> u32 {
        self.granted - self.in_use - self.owed
    }

    /// A request IU arrived. Fails if it exceeds the granted limit
    /// (SRP r16a 5.6: the target may then answer BUSY or TASK SET FULL).
    pub fn on_request(&mut self) -> Result<(), Overdrawn> {
        if self.in_use + self.owed >= self.granted {
            return Err(Overdrawn);
        }
        self.in_use += 1;
        Ok(())
    }

    /// The request's receive buffer was posted again: its credit becomes
    /// owed to the initiator.
    pub fn on_release(&mut self) {
        debug_assert!(self.in_use > 0, "credit released twice");
        self.in_use = self.in_use.saturating_sub(1);
        self.owed += 1;
    }

    /// Takes every owed credit for an IU's REQUEST LIMIT DELTA field.
    pub fn take_delta(&mut self) -> u32 {
        std::mem::take(&mut self.owed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn limit_and_delta() {
        let mut c = Credits::new(2);
        assert_eq!(c.initiator_limit(), 2);
        c.on_request().unwrap();
        c.on_request().unwrap();
        assert_eq!(c.on_request(), Err(Overdrawn));
        c.on_release();
        // Released but not yet reported: the initiator still sees 0.
        assert_eq!(c.initiator_limit(), 0);
        assert_eq!(c.on_request(), Err(Overdrawn));
        assert_eq!(c.take_delta(), 1);
        assert_eq!(c.initiator_limit(), 1);
        assert_eq!(c.take_delta(), 0);
    }

    proptest! {
        /// Whatever the order of events, the initiator's limit plus
        /// outstanding plus owed credits equals the grant.
        #[test]
        fn conserved(ops in proptest::collection::vec(0u8..3, 0..500)) {
            let mut c = Credits::new(16);
            for op in ops {
                match op {
                    0 => { let _ = c.on_request(); }
                    1 => if c.in_use() > 0 { c.on_release() },
                    _ => { c.take_delta(); }
                }
                prop_assert_eq!(c.initiator_limit() + c.in_use() + c.owed(), 16);
            }
        }
    }
}
