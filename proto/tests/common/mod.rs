//! Frames of every kind, built from a few varying values, for the round-trip and property tests.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use elastos_proto::v1::{self, broker_frame, client_frame, reply, BrokerFrame, ClientFrame};

/// Number of `ClientFrame` body kinds; [`client_frame`] builds kind `0..CLIENT_KINDS`.
pub const CLIENT_KINDS: usize = 12;
/// Number of `BrokerFrame` body kinds; [`broker_frame`] builds kind `0..BROKER_KINDS`.
pub const BROKER_KINDS: usize = 10;

/// A service id of the right length, varying with `id`.
pub fn service_id(id: u64) -> Vec<u8> {
    [id.to_le_bytes(), (!id).to_be_bytes()].concat()
}

fn identity(id: u64, name: &str) -> v1::PeerIdentity {
    v1::PeerIdentity {
        app_id: service_id(id.rotate_left(7)),
        app_name: name.to_owned(),
        publisher: [id.to_le_bytes(); 4].concat(),
    }
}

fn service(id: u64, name: &str) -> v1::ServiceInfo {
    v1::ServiceInfo {
        service_id: service_id(id),
        methods: vec![name.to_owned(), format!("{name}2")],
        topics: vec![format!("{name}/events")],
        provider: Some(identity(id, name)),
    }
}

fn error(id: u64, name: &str) -> v1::Error {
    // Every status but UNSPECIFIED and OK, which an `Error` never carries.
    let status = 2 + (id % 8) as i32;
    assert!(v1::Status::try_from(status).is_ok());
    v1::Error {
        status,
        message: format!("{name} failed"),
    }
}

/// The client frame of kind `kind` (see `client_frame::Body::name`), its fields taken from `id`, `payload`
/// and `name`.
pub fn client_frame(kind: usize, id: u64, payload: &[u8], name: &str) -> ClientFrame {
    use client_frame::Body;
    let service_id = service_id(id);
    let body = match kind {
        0 => Body::Hello(v1::ClientHello {
            min_version: (id % 3) as u32,
            max_version: (id % 5) as u32,
        }),
        1 => Body::Register(v1::Register {
            request_id: id,
            service_id,
            methods: vec![name.to_owned(), format!("{name}.b")],
            topics: vec![format!("{name}/t")],
        }),
        2 => Body::Unregister(v1::Unregister {
            request_id: id,
            service_id,
        }),
        3 => Body::Lookup(v1::Lookup {
            request_id: id,
            service_id,
        }),
        4 => Body::Call(v1::Call {
            call_id: id,
            service_id,
            method: name.to_owned(),
            payload: payload.to_vec(),
            deadline_ms: (id >> 32) as u32,
        }),
        5 => Body::Cancel(v1::Cancel { call_id: id }),
        6 => Body::Reply(v1::Reply {
            call_id: id,
            outcome: Some(if id.is_multiple_of(2) {
                reply::Outcome::Payload(payload.to_vec())
            } else {
                reply::Outcome::Error(error(id, name))
            }),
        }),
        7 => Body::Subscribe(v1::Subscribe {
            request_id: id,
            service_id,
            topic: name.to_owned(),
        }),
        8 => Body::Unsubscribe(v1::Unsubscribe {
            request_id: id,
            service_id,
            topic: name.to_owned(),
        }),
        9 => Body::Publish(v1::Publish {
            service_id,
            topic: name.to_owned(),
            payload: payload.to_vec(),
        }),
        10 => Body::Watch(v1::Watch {
            request_id: id,
            service_id,
        }),
        11 => Body::Unwatch(v1::Unwatch {
            request_id: id,
            service_id,
        }),
        _ => panic!("client frame kind {kind} out of 0..{CLIENT_KINDS}"),
    };
    ClientFrame { body: Some(body) }
}

/// The broker frame of kind `kind` (see `broker_frame::Body::name`).
pub fn broker_frame(kind: usize, id: u64, payload: &[u8], name: &str) -> BrokerFrame {
    use broker_frame::Body;
    let body = match kind {
        0 => Body::Welcome(v1::ServerHello {
            version: 1,
            identity: Some(identity(id, name)),
            limits: Some(v1::Limits {
                max_frame_bytes: elastos_proto::MAX_FRAME_LEN as u32,
                max_calls_in_flight: (id % 1000) as u32,
                max_deadline_ms: (id >> 40) as u32,
            }),
        }),
        1 => Body::Response(v1::Response {
            request_id: id,
            error: (id % 2 == 1).then(|| error(id, name)),
            service: id.is_multiple_of(2).then(|| service(id, name)),
        }),
        2 => Body::Reply(v1::Reply {
            call_id: id,
            outcome: Some(if id.is_multiple_of(2) {
                reply::Outcome::Payload(payload.to_vec())
            } else {
                reply::Outcome::Error(error(id, name))
            }),
        }),
        3 => Body::IncomingCall(v1::IncomingCall {
            call_id: id,
            service_id: service_id(id),
            method: name.to_owned(),
            payload: payload.to_vec(),
            deadline_ms: 1 + (id % 30_000) as u32,
            caller: Some(identity(!id, name)),
        }),
        4 => Body::Cancel(v1::Cancel { call_id: id }),
        5 => Body::Event(v1::Event {
            service_id: service_id(id),
            topic: name.to_owned(),
            payload: payload.to_vec(),
            dropped: id % 3,
        }),
        6 => Body::ProviderGone(v1::ProviderGone {
            service_id: service_id(id),
            reason: (id % 4) as i32,
        }),
        7 => Body::ServiceAvailable(v1::ServiceAvailable {
            service: Some(service(id, name)),
        }),
        8 => Body::Goodbye(v1::Goodbye {
            reason: Some(error(id, name)),
        }),
        9 => Body::Response(v1::Response {
            request_id: id,
            error: None,
            service: None,
        }),
        _ => panic!("broker frame kind {kind} out of 0..{BROKER_KINDS}"),
    };
    BrokerFrame { body: Some(body) }
}
