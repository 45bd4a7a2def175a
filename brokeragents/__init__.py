"""brokeragents: the MiniAgents framework, distributed on Redis Streams.

Everything public is exported here; the rest of the package is implementation.
"""

from __future__ import annotations

from brokeragents.agents import AgentFunction as AgentFunction
from brokeragents.agents import MiniAgent as MiniAgent
from brokeragents.agents import miniagent as miniagent
from brokeragents.appender import StreamAppender as StreamAppender
from brokeragents.calls import AgentCall as AgentCall
from brokeragents.calls import InteractionContext as InteractionContext
from brokeragents.calls import get_current_agent_trace as get_current_agent_trace
from brokeragents.context import PromiseResolvedEventHandler as PromiseResolvedEventHandler
from brokeragents.context import PromisingContext as PromisingContext
from brokeragents.errors import AppenderClosedError as AppenderClosedError
from brokeragents.errors import AppenderNotOpenError as AppenderNotOpenError
from brokeragents.errors import BrokerAgentsError as BrokerAgentsError
from brokeragents.errors import CallFailedError as CallFailedError
from brokeragents.errors import FunctionNotProvidedError as FunctionNotProvidedError
from brokeragents.errors import MessageTooLargeError as MessageTooLargeError
from brokeragents.errors import NoActiveContextError as NoActiveContextError
from brokeragents.errors import PromisingContextError as PromisingContextError
from brokeragents.errors import PromisingError as PromisingError
from brokeragents.errors import RemoteError as RemoteError
from brokeragents.errors import ReplyRestartedError as ReplyRestartedError
from brokeragents.errors import UnknownMessageClassError as UnknownMessageClassError
from brokeragents.errors import WireFormatError as WireFormatError
from brokeragents.errors import WrongActiveContextError as WrongActiveContextError
from brokeragents.frozen import Frozen as Frozen
from brokeragents.frozen import cached_privately as cached_privately
from brokeragents.keys import Keys as Keys
from brokeragents.message_promise import MessagePromise as MessagePromise
from brokeragents.message_promise import MessageTokenAppender as MessageTokenAppender
from brokeragents.message_promise import MessageTokenStreamer as MessageTokenStreamer
from brokeragents.message_sequence import MessageSequence as MessageSequence
from brokeragents.message_sequence import MessageSequenceAppender as MessageSequenceAppender
from brokeragents.message_sequence import MessageSequencePromise as MessageSequencePromise
from brokeragents.message_sequence import MessageType as MessageType
from brokeragents.message_sequence import SingleMessageType as SingleMessageType
from brokeragents.messages import ErrorMessage as ErrorMessage
from brokeragents.messages import Message as Message
from brokeragents.messages import StrictMessage as StrictMessage
from brokeragents.messages import TextMessage as TextMessage
from brokeragents.messages import TextToken as TextToken
from brokeragents.messages import Token as Token
from brokeragents.nodes import AgentCallNode as AgentCallNode
from brokeragents.nodes import AgentInteractionNode as AgentInteractionNode
from brokeragents.nodes import AgentReplyNode as AgentReplyNode
from brokeragents.promise import Promise as Promise
from brokeragents.promise import PromiseResolver as PromiseResolver
from brokeragents.promise import PromiseStreamer as PromiseStreamer
from brokeragents.promise import StreamedPromise as StreamedPromise
from brokeragents.replay import aload_message as aload_message
from brokeragents.replay import aopen_message_promise as aopen_message_promise
from brokeragents.replay import aopen_sequence_promise as aopen_sequence_promise
from brokeragents.runtime import MiniAgents as MiniAgents
from brokeragents.runtime import PersistMessagesEventHandler as PersistMessagesEventHandler
from brokeragents.sentinels import END_OF_QUEUE as END_OF_QUEUE
from brokeragents.sentinels import END_OF_UNORDERED_QUEUE as END_OF_UNORDERED_QUEUE
from brokeragents.sentinels import FAILED as FAILED
from brokeragents.sentinels import NO_VALUE as NO_VALUE
from brokeragents.sentinels import Sentinel as Sentinel
from brokeragents.sequence import FlatSequence as FlatSequence
from brokeragents.sequence import SequenceFlattener as SequenceFlattener
from brokeragents.utils import as_single_text_promise as as_single_text_promise
from brokeragents.utils import display_agent_trace as display_agent_trace

__version__ = "0.1.0"

__all__ = (
    "END_OF_QUEUE",
    "END_OF_UNORDERED_QUEUE",
    "FAILED",
    "NO_VALUE",
    "AgentCall",
    "AgentCallNode",
    "AgentFunction",
    "AgentInteractionNode",
    "AgentReplyNode",
    "AppenderClosedError",
    "AppenderNotOpenError",
    "BrokerAgentsError",
    "CallFailedError",
    "ErrorMessage",
    "FlatSequence",
    "Frozen",
    "FunctionNotProvidedError",
    "InteractionContext",
    "Keys",
    "Message",
    "MessagePromise",
    "MessageSequence",
    "MessageSequenceAppender",
    "MessageSequencePromise",
    "MessageTokenAppender",
    "MessageTokenStreamer",
    "MessageTooLargeError",
    "MessageType",
    "MiniAgent",
    "MiniAgents",
    "NoActiveContextError",
    "PersistMessagesEventHandler",
    "Promise",
    "PromiseResolvedEventHandler",
    "PromiseResolver",
    "PromiseStreamer",
    "PromisingContext",
    "PromisingContextError",
    "PromisingError",
    "RemoteError",
    "ReplyRestartedError",
    "Sentinel",
    "SequenceFlattener",
    "SingleMessageType",
    "StreamAppender",
    "StreamedPromise",
    "StrictMessage",
    "TextMessage",
    "TextToken",
    "Token",
    "UnknownMessageClassError",
    "WireFormatError",
    "WrongActiveContextError",
    "__version__",
    "aload_message",
    "aopen_message_promise",
    "aopen_sequence_promise",
    "as_single_text_promise",
    "cached_privately",
    "display_agent_trace",
    "get_current_agent_trace",
    "miniagent",
)
