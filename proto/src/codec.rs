//! The protobuf codec of every `tether.v1` service and client: tonic-prost's, except that a message that
//! does not decode ends the call with INVALID_ARGUMENT. The bytes came from the peer, so it is the peer's
//! bad input (what `admin.proto` promises for invalid requests), not an INTERNAL failure of the receiver.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(ProstCodec::<T, U>::raw_decoder(buffer_settings()))
    }
}

/// Every stream holds one encode and one decode buffer for as long as it lives, and a scheduler holds one
/// stream per sidecar: tonic's 8 KiB each were about 16 KiB per sidecar, for reports and commands that
/// are mostly far smaller. A buffer grows to fit a larger message (up to the call's message size limit),
/// so this only sets where it starts and how much it grows by.
const BUFFER_BYTES: usize = 1024;

fn buffer_settings() -> BufferSettings {
    // 32 KiB: tonic's default yield threshold (how much encoded output is batched before yielding).
    BufferSettings::new(BUFFER_BYTES, 32 * 1024)
}

/// tonic-prost's decoder with the status code of a bad message changed.
#[derive(Debug, Clone)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "the message is not a valid {}: {}",
                std::any::type_name::<U>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("message"),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
