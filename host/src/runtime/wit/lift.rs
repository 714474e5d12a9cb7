//! What a guest returns from an event, copied out of its memory only within
//! the event's output budget.
//!
//! bindgen's types copy a result whole as it is lifted: a response of 120
//! headers that all point at one 1 MiB buffer would cost 120 MiB of host
//! memory before any limit is looked at. The `Raw*` types here mirror the
//! WIT results, with [`Text`], [`Bytes`] and [`List`] in place of `string`
//! and `list`: as each is lifted it charges its length to a budget
//! ([`Limits::max_output_bytes`]) before anything is allocated, and an event
//! past the budget fails with `InvalidOutput` having copied at most that
//! much. `convert::Reader` then checks the shapes (header count and bytes,
//! actions, session size, frame and payload sizes) and turns the result into
//! the host's own types.
//!
//! The budget lives in a thread-local that [`budgeted`] sets around every
//! poll of the call: wasmtime lifts a result inside the poll in which the
//! guest returns, on the polling thread. (Lifting must happen there:
//! wasmtime runs the guest's post-return, which frees the result's memory,
//! before the call returns.)

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use wasmtime::component::{ComponentType, Lift};

use crate::runtime::error::OutputTooLarge;

thread_local! {
    /// Bytes the output being lifted on this thread may still take.
    static BUDGET: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Charge `bytes` to the budget of the output being lifted.
fn charge(bytes: usize) -> wasmtime::Result<()> {
    BUDGET.with(|budget| match budget.get() {
        // Not lifting an event's output.
        None => Ok(()),
        Some(left) if bytes <= left => {
            budget.set(Some(left - bytes));
            Ok(())
        }
        Some(_) => Err(wasmtime::Error::new(OutputTooLarge(bytes))),
    })
}

/// Run `call` with an output budget of `bytes` for what it lifts.
pub(crate) fn budgeted<'a, R: 'a>(
    bytes: usize,
    call: impl Future<Output = R> + Send + 'a,
) -> impl Future<Output = R> + Send + 'a {
    Budgeted {
        left: bytes,
        call: Box::pin(call),
    }
}

struct Budgeted<'a, R> {
    left: usize,
    call: Pin<Box<dyn Future<Output = R> + Send + 'a>>,
}

impl<R> Future for Budgeted<'_, R> {
    type Output = R;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R> {
        let before = BUDGET.with(|b| b.replace(Some(self.left)));
        let polled = self.call.as_mut().poll(cx);
        self.left = BUDGET.with(|b| b.replace(before)).unwrap_or(0);
        polled
    }
}

/// `string`, `list<u8>` and `list<T>` that charge the output budget before
/// they are copied.
#[allow(unsafe_code)]
mod bounded {
    use wasmtime::ValRaw;
    use wasmtime::component::__internal::{
        CanonicalAbiInfo, InstanceType, InterfaceType, LiftContext,
    };
    use wasmtime::component::{ComponentType, Lift};

    use super::charge;

    /// The length half of a canonical-ABI (pointer, length) pair.
    fn flat_len(src: &[ValRaw; 2]) -> usize {
        src[1].get_u32() as usize
    }

    fn memory_len(bytes: &[u8]) -> usize {
        bytes
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_le_bytes(b) as usize)
    }

    /// A `string`.
    #[derive(Debug)]
    pub(crate) struct Text(pub(crate) String);

    /// A `list<u8>`.
    #[derive(Debug)]
    pub(crate) struct Bytes(pub(crate) Vec<u8>);

    /// A `list<T>`.
    #[derive(Debug)]
    pub(crate) struct List<T>(pub(crate) Vec<T>);

    // SAFETY: `Text` has exactly the component type and canonical ABI of
    // `String` (every item is forwarded to `String`'s), so wasmtime lowers
    // and lifts it as a `string`.
    unsafe impl ComponentType for Text {
        type Lower = <String as ComponentType>::Lower;
        const ABI: CanonicalAbiInfo = <String as ComponentType>::ABI;

        fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
            <String as ComponentType>::typecheck(ty, types)
        }
    }

    // SAFETY: lifting reads the length, charges it, then lifts a `String`
    // from the same source: the same reads `String`'s lift makes.
    unsafe impl Lift for Text {
        fn linear_lift_from_flat(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            src: &Self::Lower,
        ) -> wasmtime::Result<Self> {
            charge(flat_len(src))?;
            Ok(Text(String::linear_lift_from_flat(cx, ty, src)?))
        }

        fn linear_lift_from_memory(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            bytes: &[u8],
        ) -> wasmtime::Result<Self> {
            charge(memory_len(bytes))?;
            Ok(Text(String::linear_lift_from_memory(cx, ty, bytes)?))
        }
    }

    // SAFETY: as for `Text`, forwarding to `Vec<u8>` (`list<u8>`).
    unsafe impl ComponentType for Bytes {
        type Lower = <Vec<u8> as ComponentType>::Lower;
        const ABI: CanonicalAbiInfo = <Vec<u8> as ComponentType>::ABI;

        fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
            <Vec<u8> as ComponentType>::typecheck(ty, types)
        }
    }

    // SAFETY: as for `Text`.
    unsafe impl Lift for Bytes {
        fn linear_lift_from_flat(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            src: &Self::Lower,
        ) -> wasmtime::Result<Self> {
            charge(flat_len(src))?;
            Ok(Bytes(Vec::<u8>::linear_lift_from_flat(cx, ty, src)?))
        }

        fn linear_lift_from_memory(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            bytes: &[u8],
        ) -> wasmtime::Result<Self> {
            charge(memory_len(bytes))?;
            Ok(Bytes(Vec::<u8>::linear_lift_from_memory(cx, ty, bytes)?))
        }
    }

    // SAFETY: as for `Text`, forwarding to `Vec<T>` (`list<T>`).
    unsafe impl<T: ComponentType> ComponentType for List<T> {
        type Lower = <Vec<T> as ComponentType>::Lower;
        const ABI: CanonicalAbiInfo = <Vec<T> as ComponentType>::ABI;

        fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> wasmtime::Result<()> {
            <Vec<T> as ComponentType>::typecheck(ty, types)
        }
    }

    // SAFETY: as for `Text`; the charge is what the host `Vec` of the
    // elements will take (their own contents charge as they are lifted).
    unsafe impl<T: Lift> Lift for List<T> {
        fn linear_lift_from_flat(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            src: &Self::Lower,
        ) -> wasmtime::Result<Self> {
            charge(flat_len(src).saturating_mul(std::mem::size_of::<T>().max(1)))?;
            Ok(List(Vec::<T>::linear_lift_from_flat(cx, ty, src)?))
        }

        fn linear_lift_from_memory(
            cx: &mut LiftContext<'_>,
            ty: InterfaceType,
            bytes: &[u8],
        ) -> wasmtime::Result<Self> {
            charge(memory_len(bytes).saturating_mul(std::mem::size_of::<T>().max(1)))?;
            Ok(List(Vec::<T>::linear_lift_from_memory(cx, ty, bytes)?))
        }
    }
}

pub(crate) use bounded::{Bytes, List, Text};

/// The WIT results with bounded strings and lists. Names and field order
/// follow `wit/types.wit` exactly (the types are checked against the
/// component's when it is called).
pub(crate) mod raw {
    use super::*;

    type Attributes = List<(Text, Text)>;

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawHeader {
        pub(crate) name: Text,
        pub(crate) value: Bytes,
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawResponse {
        pub(crate) status: u16,
        pub(crate) headers: List<RawHeader>,
        pub(crate) body: Bytes,
    }

    // Built by `Lift` from guest memory, never by this crate.
    #[allow(dead_code)]
    #[derive(ComponentType, Lift, Clone, Copy)]
    #[component(enum)]
    #[repr(u8)]
    pub(crate) enum RawStreamFormat {
        #[component(name = "sse")]
        Sse,
        #[component(name = "ndjson")]
        Ndjson,
        #[component(name = "long-poll")]
        LongPoll,
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawHold {
        pub(crate) channels: List<Text>,
        pub(crate) format: RawStreamFormat,
        pub(crate) since: Option<Text>,
        #[component(name = "timeout-ms")]
        pub(crate) timeout_ms: Option<u32>,
        pub(crate) headers: List<RawHeader>,
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawAccept {
        pub(crate) channels: List<Text>,
        pub(crate) session: Attributes,
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawRequestOutcome {
        #[component(name = "respond")]
        Respond(RawResponse),
        #[component(name = "hold")]
        Hold(RawHold),
        #[component(name = "upgrade")]
        Upgrade(RawAccept),
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawRejection {
        pub(crate) status: u16,
        pub(crate) reason: Text,
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawConnectOutcome {
        #[component(name = "accept")]
        Accept(Attributes),
        #[component(name = "reject")]
        Reject(RawRejection),
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawSubscribeOutcome {
        #[component(name = "allow")]
        Allow,
        #[component(name = "deny")]
        Deny(Text),
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawPayload {
        #[component(name = "text")]
        Text(Text),
        #[component(name = "binary")]
        Binary(Bytes),
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawPublishVerdict {
        #[component(name = "accept")]
        Accept,
        #[component(name = "replace")]
        Replace(RawPayload),
        #[component(name = "reject")]
        Reject(Text),
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawCloseFrame {
        pub(crate) code: u16,
        pub(crate) reason: Text,
    }

    #[derive(ComponentType, Lift)]
    #[component(record)]
    pub(crate) struct RawOutgoing {
        pub(crate) channel: Text,
        pub(crate) payload: RawPayload,
    }

    #[derive(ComponentType, Lift)]
    #[component(variant)]
    pub(crate) enum RawAction {
        #[component(name = "send")]
        Send(RawPayload),
        #[component(name = "publish")]
        Publish(RawOutgoing),
        #[component(name = "subscribe")]
        Subscribe(Text),
        #[component(name = "unsubscribe")]
        Unsubscribe(Text),
        #[component(name = "set-session")]
        SetSession(Attributes),
        #[component(name = "close")]
        Close(RawCloseFrame),
    }
}
