//! One running `imsg rpc` child as the watcher uses it: its client, its event stream and the
//! events held back while a request was in flight.

use std::collections::VecDeque;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::imsg::rpc::{CallError, Event, RpcClient, Started};

pub struct Connection {
    pub client: RpcClient,
    events: mpsc::Receiver<Event>,
    /// Events that arrived while a request was pending, delivered before the live stream.
    backlog: VecDeque<Event>,
    done: oneshot::Receiver<()>,
}

impl Connection {
    pub fn new(started: Started) -> Connection {
        Connection {
            client: started.client,
            events: started.events,
            backlog: VecDeque::new(),
            done: started.done,
        }
    }

    /// A request on this child. Notifications that arrive meanwhile (a lenient server replays
    /// before answering `watch.subscribe`) are held in the backlog: the event queue is bounded,
    /// so leaving them would stall the reader and with it the reply.
    pub async fn request(
        &mut self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, CallError> {
        let call = self.client.request(method, params, timeout);
        tokio::pin!(call);
        loop {
            tokio::select! {
                result = &mut call => return result,
                event = self.events.recv() => match event {
                    Some(e) => self.backlog.push_back(e),
                    None => return call.await,
                },
            }
        }
    }

    /// The next event: held ones first, then the live stream; `None` once the child is gone.
    /// Cancel safe: an event is taken from the stream only when this resolves.
    pub async fn next_event(&mut self) -> Option<Event> {
        match self.backlog.pop_front() {
            Some(e) => Some(e),
            None => self.events.recv().await,
        }
    }

    /// Whether another event can be had without waiting (it moves to the backlog).
    pub fn more_ready(&mut self) -> bool {
        if !self.backlog.is_empty() {
            return true;
        }
        match self.events.try_recv() {
            Ok(event) => {
                self.backlog.push_back(event);
                true
            }
            Err(_) => false,
        }
    }

    /// The newest visible row id (the newest message of the 5 most recently active chats),
    /// or `None` when it cannot be told.
    pub async fn newest_row(&mut self) -> Option<i64> {
        let timeout = Duration::from_secs(10);
        let chats = self
            .request("chats.list", json!({"limit": 5}), timeout)
            .await
            .ok()?;
        let ids: Vec<i64> = chats
            .get("chats")?
            .as_array()?
            .iter()
            .filter_map(|c| c.get("id")?.as_i64())
            .collect();
        let mut newest = None;
        for chat_id in ids {
            let history = self
                .request(
                    "messages.history",
                    json!({"chat_id": chat_id, "limit": 1}),
                    timeout,
                )
                .await
                .ok()?;
            if let Some(id) = history.pointer("/messages/0/id").and_then(Value::as_i64) {
                newest = Some(newest.map_or(id, |n: i64| n.max(id)));
            }
        }
        newest
    }

    /// Ends the child (EOF, then signals) and waits for it to be reaped.
    pub async fn shutdown(self) {
        self.client
            .shutdown(self.done, Duration::from_secs(2))
            .await;
    }
}
