//! Idempotent sends (actions.md §7.2, §7.5): `send.tracked`, where the caller's UUID becomes
//! the message GUID, and `message.send_status`, which reads a row's delivery state. Rows
//! written by sends carry a send state (scenario `send.state`, journal op `send_state`) so a
//! second process sees what the first wrote.

use serde_json::{json, Value};

use crate::db;
use crate::methods::perr;
use crate::params::Params;
use crate::state::{RpcError, Sim};

type Res = Result<Value, RpcError>;
/// A tracked send's answer (`None`: the reply is lost) or error, with the rows written.
type Tracked = Result<(Option<Value>, Vec<i64>), (RpcError, Vec<i64>)>;

/// `8-4-4-4-12` hex digits.
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn before_dispatch(detail: &str) -> RpcError {
    RpcError::new(
        -32603,
        "Delivery failed before dispatch",
        Some(
            json!({"retry_safe": true, "disposition": "not_started", "transport": "bridge",
            "operation": "send-message", "detail": detail}),
        ),
    )
}

impl Sim {
    /// Whether the bridge can keep a caller-owned GUID (`bridge_features.tracked`, default
    /// true from 0.15.0 with the bridge ready).
    pub fn tracked_sends(&self) -> bool {
        self.at_least((0, 15, 0))
            && self.bridge.as_str() == Some("ready")
            && self
                .bridge_features
                .get("tracked")
                .and_then(Value::as_bool)
                .unwrap_or(true)
    }

    /// Records the send state of a row a send wrote (scenario `send.state`, default
    /// `delivered` now).
    pub fn note_send_state(&mut self, id: i64) {
        let state = self
            .send_cfg
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("delivered")
            .to_string();
        let at = self.clock.now_ms();
        self.set_send_state(id, &state, at);
    }

    pub fn set_send_state(&mut self, id: i64, state: &str, at: i64) {
        self.db.send_states.insert(id, (state.to_string(), at));
        if self.journal.is_some() {
            self.journal_out
                .push(json!({"send_state": {"id": id, "state": state, "at": at}}));
        }
    }

    /// `send.tracked`: the checks of §7.2 in order, then one text over the bridge with the
    /// attempt id as its GUID. Returns the result (or `None` when the reply is to be lost)
    /// and the rows written.
    pub fn send_tracked(&mut self, p: &Params) -> Tracked {
        let fail = |e: RpcError| (e, Vec::new());
        let attempt = p.string("attempt_id").map_err(perr).map_err(fail)?;
        let attempt = attempt
            .filter(|a| is_uuid(a))
            .ok_or_else(|| fail(RpcError::params("attempt_id must be a UUID")))?
            .to_lowercase();
        let mut req = self
            .read_send_as(p, "send.tracked", &["attempt_id", "allow_sms_fallback"])
            .map_err(fail)?;
        if !req.file.is_empty() || req.text.is_empty() {
            return Err(fail(RpcError::params(
                "send.tracked supports exactly one text message",
            )));
        }
        if req.transport.as_deref() == Some("applescript") {
            return Err(fail(RpcError::params(
                "send.tracked requires bridge transport",
            )));
        }
        if self
            .db
            .rows
            .values()
            .any(|r| r.guid.eq_ignore_ascii_case(&attempt))
        {
            return Err(fail(before_dispatch(
                "attempt_id already identifies a message; choose a new UUID",
            )));
        }
        if self.db.reserved.contains(&attempt) {
            return Err(fail(before_dispatch(
                "attempt_id is reserved by another tracked send",
            )));
        }
        let chat = match self.resolve_chat(p).map_err(fail)? {
            Some(c) => c,
            None => {
                let handle = self
                    .db
                    .normalize_phone(req.to.as_deref().unwrap_or(""), &req.region);
                self.db
                    .chats
                    .values()
                    .find(|c| !c.is_group() && c.identifier == handle)
                    .cloned()
                    .ok_or_else(|| {
                        fail(RpcError::params(
                            "bridge transport requires an existing chat target",
                        ))
                    })?
            }
        };
        if !self.tracked_sends() {
            return Err(fail(self.bridge_unavailable()));
        }
        let mode = self.send_mode();
        let write_row = self.send_cfg.get("write_row").and_then(Value::as_bool) != Some(false);
        req.guid = Some(attempt.clone());
        let written = if write_row {
            self.write_sent_rows(chat.id, &req, 0).0
        } else {
            Vec::new()
        };
        if mode == "lost_reply" {
            return Ok((None, written));
        }
        let guid = if mode == "tracked_mismatch" {
            db::guid_for(written.first().copied().unwrap_or(0)).to_lowercase()
        } else {
            attempt.clone()
        };
        let service = if chat.service == "SMS" {
            "SMS"
        } else {
            "iMessage"
        };
        Ok((
            Some(
                json!({"ok": true, "transport": "bridge", "guid": guid, "message_id": guid,
                "chat_guid": chat.guid, "service": service, "attempt_id": attempt}),
            ),
            written,
        ))
    }

    /// `message.send_status` (§7.2): the row's state; a missing row is `pending` with explicit
    /// nulls (§10 E10).
    pub fn send_status(&self, p: &Params) -> Res {
        p.allow("message.send_status", &["guid"]).map_err(perr)?;
        let guid = p
            .string("guid")
            .map_err(perr)?
            .map(|g| g.trim().to_string())
            .filter(|g| !g.is_empty())
            .ok_or_else(|| RpcError::params("guid is required"))?;
        let checked_at = db::iso(self.clock.now_ms());
        let Some(row) = self
            .db
            .rows
            .values()
            .find(|r| r.guid.eq_ignore_ascii_case(&guid))
        else {
            return Ok(
                json!({"ok": true, "guid": guid, "send_state": "pending", "service": null,
                "checked_at": checked_at, "status_fields": null}),
            );
        };
        // Fixture rows were delivered 750 ms after they were written (sim).
        let (state, at) = self
            .db
            .send_states
            .get(&row.id)
            .cloned()
            .unwrap_or_else(|| ("delivered".into(), row.date_ms + 750));
        let delivered = state == "delivered";
        let service = row
            .chat_id
            .and_then(|c| self.db.chats.get(&c))
            .map(|c| c.service.clone())
            .unwrap_or_else(|| "iMessage".into());
        let date_delivered = if delivered {
            json!(db::iso(at))
        } else {
            Value::Null
        };
        let mut result = json!({"ok": true, "guid": guid, "send_state": state, "service": service,
            "checked_at": checked_at,
            "status_fields": {"is_sent": matches!(state.as_str(), "sent" | "delivered"),
                "is_delivered": delivered, "is_finished": state != "pending",
                "error": if state == "failed" { 4 } else { 0 },
                "date_delivered": date_delivered, "date_read": null, "is_delayed": false,
                "is_prepared": false, "is_pending_satellite_send": false, "was_downgraded": false}});
        if delivered {
            result["delivered_at"] = json!(db::iso(at));
        }
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::is_uuid;

    #[test]
    fn uuids() {
        assert!(is_uuid("902213B2-BB8F-5B99-9E86-FBAAC70123AA"));
        assert!(!is_uuid("nope"));
        assert!(!is_uuid("902213b2-bb8f-5b99-9e86-fbaac70123a"));
    }
}
