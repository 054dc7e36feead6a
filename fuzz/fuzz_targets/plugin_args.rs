//! Plug-in arguments as an operator types them. Nothing may panic; whatever parses has
//! valid names, and writing it back quoted parses to the same arguments.
#![no_main]

use libfuzzer_sys::fuzz_target;
use site_server::sansio::plugin_args::parse;

fuzz_target!(|s: &str| {
    let Ok(args) = parse(s) else {
        return;
    };
    let mut again = String::new();
    for (name, value) in &args {
        assert!(name.starts_with(|c: char| c.is_ascii_alphabetic()), "{name:?}");
        again.push_str(&format!("{name}=\"{}\";", value.replace('"', "\"\"")));
    }
    assert_eq!(parse(&again).as_ref(), Ok(&args), "{again:?}");
});
