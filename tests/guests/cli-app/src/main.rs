//! A plain command-line program: a component, but of the wasi:cli world.

fn main() {
    println!("I am a command, not a Comet handler");
}
