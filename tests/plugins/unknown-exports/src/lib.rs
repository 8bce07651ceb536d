//! A component that is not a Ferry plugin at all: it exports an interface of
//! another package, so loading it must fail with "exports nothing Ferry
//! knows".

wit_bindgen::generate!({
    inline: "
        package acme:widget@0.1.0;
        interface spin {
            spin: func() -> u32;
        }
        world widget {
            export spin;
        }
    ",
    world: "acme:widget/widget@0.1.0",
});

struct Widget;

impl exports::acme::widget::spin::Guest for Widget {
    fn spin() -> u32 {
        42
    }
}

export!(Widget);
