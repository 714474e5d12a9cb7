//! The `#[comet_sdk::handler]` attribute (use it through `comet_sdk`).
//!
//! On `impl Handler for App { ... }` it keeps the impl as written, exports
//! `App` as `comet_sdk::export_handler!` does, and writes the names of the
//! events the impl defines into a custom section of the component,
//! `comet-hooks` (one name per line, as the WIT spells them). The host reads
//! the section at load time and answers the events the impl leaves to
//! `Handler`'s defaults itself, without starting an instance for them: the
//! defaults are fixed (accept, allow, no actions, nothing), so the answer is
//! the same and a connection no longer pays for two or three sandboxes that
//! only say yes.
//!
//! `#[comet_sdk::handler(reuse_instances)]` adds the line `reuse-instances`:
//! the module opts in to instance reuse, and the host may run many events,
//! one at a time, in one instance (see `comet_sdk`'s docs for what that
//! means for statics).

use proc_macro::TokenStream;
use quote::quote;
use syn::{ImplItem, ItemImpl, parse_macro_input};

/// The events of `comet:edge/handler`, as the trait and the WIT name them.
const EVENTS: [(&str, &str); 6] = [
    ("on_request", "on-request"),
    ("on_connect", "on-connect"),
    ("on_subscribe", "on-subscribe"),
    ("on_publish", "on-publish"),
    ("on_message", "on-message"),
    ("on_close", "on-close"),
];

/// The one argument the attribute takes, and the line it writes.
const REUSE: (&str, &str) = ("reuse_instances", "reuse-instances");

/// Export a `Handler` impl and tell the host which events it implements
/// (and, with `reuse_instances`, that its instances may serve many events).
#[proc_macro_attribute]
pub fn handler(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut section = String::new();
    if !args.is_empty() {
        let args = proc_macro2::TokenStream::from(args);
        match syn::parse2::<syn::Ident>(args.clone()) {
            Ok(arg) if arg == REUSE.0 => {
                section.push_str(REUSE.1);
                section.push('\n');
            }
            _ => {
                return syn::Error::new_spanned(
                    args,
                    "#[comet_sdk::handler] takes no arguments, or `reuse_instances`",
                )
                .to_compile_error()
                .into();
            }
        }
    }
    let imp = parse_macro_input!(item as ItemImpl);
    if imp.trait_.is_none() {
        return syn::Error::new_spanned(
            &imp.self_ty,
            "#[comet_sdk::handler] goes on `impl Handler for YourType { ... }`",
        )
        .to_compile_error()
        .into();
    }
    let ty = &imp.self_ty;
    for item in &imp.items {
        match item {
            ImplItem::Fn(f) => {
                let name = f.sig.ident.to_string();
                if let Some((_, wit)) = EVENTS.iter().find(|(rust, _)| *rust == name) {
                    section.push_str(wit);
                    section.push('\n');
                }
            }
            // A method a macro expands to would be missing from the list,
            // and the host would answer that event with the default.
            ImplItem::Macro(m) => {
                return syn::Error::new_spanned(
                    m,
                    "#[comet_sdk::handler] cannot see the methods a macro defines; \
                     write them out, or export with comet_sdk::export_handler! instead",
                )
                .to_compile_error()
                .into();
            }
            _ => {}
        }
    }
    let bytes = syn::LitByteStr::new(section.as_bytes(), proc_macro2::Span::call_site());
    let len = section.len();
    quote! {
        #imp

        ::comet_sdk::export_handler!(#ty);

        const _: () = {
            #[unsafe(link_section = "comet-hooks")]
            #[used]
            static COMET_HOOKS: [u8; #len] = *#bytes;
        };
    }
    .into()
}
