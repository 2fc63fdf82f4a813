//! The thin command-line layer: parse, call the library, print, map errors to exit codes.

pub fn main() -> i32 {
    0
}
